//! The conduit server engine (see README for status).

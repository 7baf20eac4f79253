//! The Redis adapter: one pub/sub connection (`PSUBSCRIBE <cluster>.node.*`) and one
//! multiplexed connection that publishes the outbox in pipelined batches, both made
//! anew on every reconnect.

use futures_lite::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubStream};
use redis::{AsyncConnectionConfig, Client, IntoConnectionInfo};

use super::link::{Adapter, Session};
use super::{Broker, ClusterDescriptor};

/// Redis pub/sub.
pub(super) struct Redis;

/// The client for the settings: URL plus credentials and CA given apart from it.
fn client(settings: &ClusterDescriptor) -> Result<Client, String> {
    let Broker::Redis { url } = &settings.broker else {
        return Err("not a Redis broker".into());
    };
    let mut info = url
        .as_str()
        .into_connection_info()
        .map_err(|e| e.to_string())?;
    let auth = &settings.auth;
    if auth.user.is_some() || auth.password.is_some() {
        let mut redis = info.redis_settings().clone();
        if let Some(u) = &auth.user {
            redis = redis.set_username(u);
        }
        if let Some(p) = &auth.password {
            redis = redis.set_password(p);
        }
        info = info.set_redis_settings(redis);
    }
    match &auth.tls_root_ca {
        Some(path) => {
            let root_cert = std::fs::read(path)
                .map_err(|e| format!("cannot read tls_root_ca {}: {e}", path.display()))?;
            let certs = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root_cert),
            };
            Client::build_with_tls(info, certs).map_err(|e| e.to_string())
        }
        None => Client::open(info).map_err(|e| e.to_string()),
    }
}

impl Adapter for Redis {
    type Inbound = PubSubStream;
    type Outbound = MultiplexedConnection;

    async fn connect(
        settings: &ClusterDescriptor,
        pattern: &str,
    ) -> Result<Session<Redis>, String> {
        let client = client(settings)?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(settings.connect_timeout))
            .set_response_timeout(Some(settings.connect_timeout));
        let publisher = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| e.to_string())?;
        let mut pubsub = client.get_async_pubsub().await.map_err(|e| e.to_string())?;
        pubsub
            .psubscribe(pattern)
            .await
            .map_err(|e| e.to_string())?;
        // Redis itself takes messages up to 512 MB: `max_payload_bytes` is the limit.
        Ok((pubsub.into_on_message(), publisher, None))
    }

    async fn next(inbound: &mut PubSubStream) -> Result<(String, Vec<u8>), String> {
        match inbound.next().await {
            Some(msg) => Ok((
                msg.get_channel_name().to_owned(),
                msg.get_payload_bytes().to_vec(),
            )),
            None => Err("the subscription connection closed".into()),
        }
    }

    async fn flush(_outbound: &mut MultiplexedConnection) -> Result<(), String> {
        // A pipelined PUBLISH returns once Redis answered: nothing is left to flush.
        Ok(())
    }

    async fn publish(
        outbound: &mut MultiplexedConnection,
        channel: &str,
        batch: Vec<Vec<u8>>,
    ) -> Result<(), String> {
        let mut pipe = redis::pipe();
        for m in &batch {
            pipe.cmd("PUBLISH").arg(channel).arg(m.as_slice()).ignore();
        }
        pipe.query_async::<()>(outbound)
            .await
            .map_err(|e| e.to_string())
    }
}

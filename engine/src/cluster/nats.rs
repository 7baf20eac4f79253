//! The NATS adapter: one client connection subscribed to `<cluster>.node.*`. The
//! client's own reconnection is not relied on: a `Disconnected` event ends the
//! session, so an outage is handled (counted, backed off, re-claimed) the same way as
//! with Redis.

use futures_lite::StreamExt;

use super::link::{Adapter, Session};
use super::{Broker, ClusterDescriptor};

/// A URL's user or password as written (`%40` for `@`, …) made plain.
fn decode(part: &str) -> String {
    percent_encoding::percent_decode_str(part)
        .decode_utf8_lossy()
        .into_owned()
}

/// NATS core pub/sub.
pub(super) struct Nats;

/// The subscription, and the client's connection events.
pub(super) struct Inbound {
    sub: async_nats::Subscriber,
    events: flume::Receiver<async_nats::Event>,
}

impl Adapter for Nats {
    type Inbound = Inbound;
    type Outbound = async_nats::Client;

    async fn connect(settings: &ClusterDescriptor, pattern: &str) -> Result<Session<Nats>, String> {
        let Broker::Nats { url } = &settings.broker else {
            return Err("not a NATS broker".into());
        };
        let auth = &settings.auth;
        let (tx, events) = flume::bounded(64);
        let mut options = async_nats::ConnectOptions::new()
            .connection_timeout(settings.connect_timeout)
            .require_tls(auth.tls_required)
            .event_callback(move |ev| {
                let tx = tx.clone();
                async move {
                    let _ = tx.try_send(ev);
                }
            });
        let servers = url
            .split(',')
            .map(|u| u.trim().parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        // The client does not read credentials written in a server URL: pass them as
        // options (percent-decoded), unless `auth` gives its own.
        if auth.user.is_none() && auth.password.is_none() && auth.token.is_none() {
            if let Some(s) = servers.iter().find(|s| s.has_user_pass()) {
                let user = decode(s.username().unwrap_or_default());
                options = match s.password() {
                    Some(p) => options.user_and_password(user, decode(p)),
                    None => options.token(user),
                };
            }
        }
        if let (Some(u), Some(p)) = (&auth.user, &auth.password) {
            options = options.user_and_password(u.clone(), p.clone());
        }
        if let Some(t) = &auth.token {
            options = options.token(t.clone());
        }
        if let Some(ca) = &auth.tls_root_ca {
            options = options.add_root_certificates(ca.clone());
        }
        let client = options.connect(servers).await.map_err(|e| e.to_string())?;
        let sub = client
            .subscribe(pattern.to_owned())
            .await
            .map_err(|e| e.to_string())?;
        // Make sure the subscription reached the server before claiming the id.
        client.flush().await.map_err(|e| e.to_string())?;
        let limit = client.server_info().max_payload;
        Ok((
            Inbound { sub, events },
            client,
            (limit > 0).then_some(limit),
        ))
    }

    async fn next(inbound: &mut Inbound) -> Result<(String, Vec<u8>), String> {
        loop {
            tokio::select! {
                msg = inbound.sub.next() => return match msg {
                    Some(m) => Ok((m.subject.to_string(), m.payload.to_vec())),
                    None => Err("the subscription ended".into()),
                },
                ev = inbound.events.recv_async() => match ev {
                    Ok(async_nats::Event::Disconnected) => return Err("disconnected".into()),
                    Ok(async_nats::Event::Closed) | Err(_) => return Err("connection closed".into()),
                    Ok(async_nats::Event::SlowConsumer(n)) => {
                        tracing::warn!("cluster: the NATS client dropped messages of subscription {n} (slow consumer)");
                    }
                    Ok(_) => {}
                },
            }
        }
    }

    async fn flush(outbound: &mut async_nats::Client) -> Result<(), String> {
        outbound.flush().await.map_err(|e| e.to_string())
    }

    async fn publish(
        outbound: &mut async_nats::Client,
        channel: &str,
        batch: Vec<Vec<u8>>,
    ) -> Result<(), String> {
        if outbound.connection_state() != async_nats::connection::State::Connected {
            return Err("not connected".into());
        }
        for m in batch {
            outbound
                .publish(channel.to_owned(), bytes::Bytes::from(m))
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

//! A room broadcast's set-up and its bystanders: which connections join the room
//! (spread evenly over the server's shards), the joins themselves (each answered by
//! the server, so every member is in before the first broadcast), the server's count
//! of the room, and the idle connections outside it, which must receive nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use conduit::__rt::{sleep, spawn_task, Task};
use conduit_protocol::FrameKind;
use futures_lite::FutureExt;

use super::fan::Fan;
use super::RunResult;
use crate::payload::{self, JoinResponse};
use crate::wire::Conn;
use crate::{Error, Result};

/// Shard indices a server may report: its connection ids hold 10 bits of shard.
const MAX_SHARD_INDEX: usize = 1 << 10;

/// Splits `conns` into `members` room members (in the order they are to join: the
/// first sends) and the others, who stay idle. Members are dealt out over the server's
/// shards in turn when every connection knows its shard (native logins). Otherwise
/// (netconduit-v1 logins do not say) they are the first connections opened: the server
/// deals connections out to its shards in turn as it accepts them, and accepts them
/// about in the order they were opened, so consecutive ones spread about evenly — a
/// fixed stride could land them all on one shard. The run reports the placement the
/// server answered either way.
pub(super) fn pick_members(conns: Vec<Conn>, members: usize) -> (Vec<Conn>, Vec<Conn>) {
    let shards: Option<Vec<usize>> = conns.iter().map(Conn::shard).collect();
    let chosen: Vec<usize> = match shards {
        Some(shards) => spread_over_shards(&shards, members),
        None => (0..members.min(conns.len())).collect(),
    };
    let mut slots: Vec<Option<Conn>> = conns.into_iter().map(Some).collect();
    let picked = chosen
        .iter()
        .filter_map(|&i| slots.get_mut(i).and_then(Option::take))
        .collect();
    (picked, slots.into_iter().flatten().collect())
}

/// Indices of `members` connections taken from each shard in turn (`shards[i]`: the
/// shard of connection `i`), so no two shards' shares differ by more than one while
/// each has connections left.
fn spread_over_shards(shards: &[usize], members: usize) -> Vec<usize> {
    let mut by_shard: BTreeMap<usize, std::vec::IntoIter<usize>> = BTreeMap::new();
    let mut lists: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, &s) in shards.iter().enumerate() {
        lists.entry(s).or_default().push(i);
    }
    for (s, list) in lists {
        by_shard.insert(s, list.into_iter());
    }
    let mut out = Vec::with_capacity(members);
    while out.len() < members {
        let before = out.len();
        for list in by_shard.values_mut() {
            if out.len() == members {
                break;
            }
            if let Some(i) = list.next() {
                out.push(i);
            }
        }
        if out.len() == before {
            break;
        }
    }
    out
}

/// Puts every one of `members` in room `room` (all joins in flight at once) and waits,
/// at most `deadline`, until the server has answered each; then the first member asks
/// again, and the server's answer — it is in already, and the room's size — is the
/// member count recorded in `result`, with how the server placed the members on its
/// shards. A join the server refuses, a member count that is not `members.len()`, or
/// no answer in time fails the run.
pub(super) async fn join_all(
    members: Vec<Conn>,
    room: &str,
    deadline: Duration,
    result: &mut RunResult,
) -> Result<Vec<Conn>> {
    let want = members.len();
    let tasks: Vec<Task<Result<(Conn, JoinResponse)>>> = members
        .into_iter()
        .map(|mut c| {
            let room = room.to_owned();
            spawn_task(async move {
                let r = join(&mut c, &room).await?;
                Ok((c, r))
            })
        })
        .collect();
    let joined = async {
        let mut out = Vec::with_capacity(tasks.len());
        for t in tasks {
            out.push(t.await);
        }
        Some(out)
    }
    .or(async {
        sleep(deadline).await;
        None
    })
    .await
    .ok_or_else(|| {
        Error::Timeout(format!(
            "the {want} members did not all join room {room:?} within {deadline:?} \
             (does the server have the `{}` handler?)",
            payload::BENCH_JOIN
        ))
    })?;
    let mut conns = Vec::with_capacity(want);
    let mut per_shard: Vec<usize> = Vec::new();
    for r in joined {
        let (c, answer) = r?;
        if !answer.joined {
            return Err(Error::Protocol(format!(
                "a member was in room {room:?} before it joined"
            )));
        }
        let shard = usize::try_from(answer.shard)
            .ok()
            .filter(|&s| s < MAX_SHARD_INDEX)
            .ok_or_else(|| Error::Protocol(format!("no such shard: {}", answer.shard)))?;
        if shard >= per_shard.len() {
            per_shard.resize(shard + 1, 0);
        }
        per_shard[shard] += 1;
        conns.push(c);
    }
    // Every join has been answered: the room is complete. Its size, from the server.
    let Some(first) = conns.first_mut() else {
        return Err(Error::Args("a room needs members".into()));
    };
    let again = join(first, room).await?;
    let counted = usize::try_from(again.members).unwrap_or(usize::MAX);
    result.room_members = Some(counted);
    result.room_members_per_shard = Some(per_shard);
    if again.joined || counted != want {
        result.errors += 1;
        result.notes.push(format!(
            "the server counts {counted} member(s) in room {room:?}, not {want}{}",
            if again.joined {
                " (a member was not in it)"
            } else {
                ""
            }
        ));
    }
    Ok(conns)
}

/// Sends `bench_join` for `room` over `c` and reads until the server answers,
/// answering its PINGs meanwhile.
async fn join(c: &mut Conn, room: &str) -> Result<JoinResponse> {
    let codec = c.codec;
    let pong = c.empty_frame(FrameKind::Pong)?;
    c.send(&payload::join_message(codec, room)?).await?;
    loop {
        let mut owe_pong = false;
        let mut answer = None;
        while let Some(f) = c.decoder.next_frame()? {
            match f.header.kind {
                FrameKind::Ping => owe_pong = true,
                FrameKind::Message => {
                    answer = payload::parse_join_response(codec, &f.header, f.payload)?;
                    if answer.is_some() {
                        break;
                    }
                }
                _ => {}
            }
        }
        if owe_pong {
            c.send(&pong).await?;
        }
        if let Some(a) = answer {
            return Ok(a);
        }
        c.fill().await?;
    }
}

/// A connection outside the room: answers the server's PINGs and counts every tick it
/// gets (a room broadcast must not reach it).
pub(super) async fn idle(c: Conn, fan: &Fan) -> Result<()> {
    super::read_ticks(c, fan, |_, _| fan.strays.set(fan.strays.get() + 1)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count_by_shard(shards: &[usize], picked: &[usize]) -> BTreeMap<usize, usize> {
        let mut m = BTreeMap::new();
        for &i in picked {
            *m.entry(shards[i]).or_insert(0) += 1;
        }
        m
    }

    #[test]
    fn members_are_dealt_over_the_shards() {
        // Connections placed unevenly and out of order: 0,0,0,1,0,1,0,0,1,0.
        let shards = [0, 0, 0, 1, 0, 1, 0, 0, 1, 0];
        let picked = spread_over_shards(&shards, 4);
        assert_eq!(picked, [0, 3, 1, 5]);
        assert_eq!(count_by_shard(&shards, &picked)[&0], 2);
        // More than one shard has: the rest come from the others, each index once.
        let picked = spread_over_shards(&shards, 8);
        assert_eq!(count_by_shard(&shards, &picked)[&1], 3);
        assert_eq!(count_by_shard(&shards, &picked)[&0], 5);
        let mut unique = picked.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), 8);
        // All of them, and never more than there are.
        assert_eq!(spread_over_shards(&shards, 10).len(), 10);
        assert_eq!(spread_over_shards(&shards, 11).len(), 10);
        // One shard: the first ones.
        assert_eq!(spread_over_shards(&[0; 5], 3), [0, 1, 2]);
        // 100 of 10,000 over 2 shards that took turns: 50 each.
        let turns: Vec<usize> = (0..10_000).map(|i| i % 2).collect();
        let picked = spread_over_shards(&turns, 100);
        let by = count_by_shard(&turns, &picked);
        assert_eq!((by[&0], by[&1]), (50, 50));
    }
}

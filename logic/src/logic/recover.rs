//! Recovery: what a resuming connection missed of its room's and its user's streams.

use goim_api::{Position, RecoverRequest, Recovered, Replayed, StreamRecovery};

use super::{Error, Logic};
use crate::history::{self, History, Recovery};

impl Logic {
    /// The pushes a connection missed since the positions it gave, for the streams it has (a
    /// room, a user) and asked about. comet calls this once the connection receives live pushes,
    /// so nothing falls between the replay and the live stream.
    pub async fn recover(&self, req: RecoverRequest) -> Result<Recovered, Error> {
        let Some(h) = &self.history else {
            return Ok(Recovered::default());
        };
        let room = match (req.room_since, req.room.is_empty()) {
            (Some(since), false) => {
                Some(self.recover_stream(&**h, &history::room_stream(&req.room), since).await?)
            }
            _ => None,
        };
        let user = match (req.user_since, req.mid > 0) {
            (Some(since), true) => {
                Some(self.recover_stream(&**h, &history::user_stream(req.mid), since).await?)
            }
            _ => None,
        };
        let room = room.map(|r| self.count_recovery("room", r));
        let user = user.map(|r| self.count_recovery("user", r));
        Ok(Recovered { enabled: true, room, user })
    }

    async fn recover_stream(
        &self,
        h: &dyn History,
        stream: &str,
        since: Position,
    ) -> Result<Recovery, Error> {
        let snapshot = h.read(stream).await.inspect_err(|_| self.metrics.history_error("read"))?;
        Ok(snapshot.since(since, self.config.history.ttl))
    }

    fn count_recovery(&self, stream: &'static str, r: Recovery) -> StreamRecovery {
        self.metrics.recovered(stream, r.complete, r.entries.len());
        StreamRecovery {
            position: r.position,
            complete: r.complete,
            pushes: r
                .entries
                .into_iter()
                .map(|e| Replayed { offset: e.offset, op: e.op, body: e.body })
                .collect(),
        }
    }
}

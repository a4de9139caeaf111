//! Batch systems: where agents run. The driver asks for an agent per
//! attempt; the batch system starts it (a local process, or a Kubernetes
//! Job whose pod runs the agent) and reports when it goes away.
//!
//! A batch system runs as its own task and talks to the driver only through
//! channels, so a slow cluster API never stalls scheduling.

pub mod kubernetes;
pub mod local;

use toil_proto::v1::Cause;

use crate::core::Request;

/// Start an agent bound to one attempt.
#[derive(Clone, Debug)]
pub struct AgentLaunch {
    /// The agent's identity.
    pub agent_id: String,
    /// The agent's secret.
    pub agent_token: String,
    /// The attempt it will be handed first.
    pub attempt_id: String,
    /// The job of that attempt.
    pub job_id: String,
    /// What the slot must offer.
    pub request: Request,
    /// The job's time limit, if it has one (a Kubernetes Job's deadline).
    pub time_limit: Option<std::time::Duration>,
}

/// A request to the batch system.
#[derive(Debug)]
pub enum BatchCmd {
    /// Start an agent.
    Launch(AgentLaunch),
    /// Stop an agent (SIGTERM; it kills its job and reports).
    Kill {
        /// The agent.
        agent_id: String,
    },
    /// Stop every agent and end; replies when done.
    Shutdown(tokio::sync::oneshot::Sender<()>),
}

/// News from the batch system.
#[derive(Clone, Debug)]
pub enum BatchEvent {
    /// The agent's slot is known (pod name, process id).
    Placed {
        /// The agent.
        agent_id: String,
        /// Where it runs.
        placement: String,
    },
    /// The agent is gone. `cause` is the platform's diagnosis when it has one
    /// (OOM kill, eviction, image pull failure...); otherwise the attempt, if
    /// still running, ends as AGENT_LOST with `detail`.
    AgentGone {
        /// The agent.
        agent_id: String,
        /// The platform's diagnosis.
        cause: Option<Cause>,
        /// What is known about how it ended.
        detail: String,
    },
}

/// Resources a batch system offers at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capacity {
    /// CPU in millicores.
    pub millicores: u64,
    /// Memory in bytes.
    pub memory: u64,
    /// Disk in bytes (`None`: not limited).
    pub disk: Option<u64>,
    /// GPUs.
    pub gpus: u32,
    /// Most attempts at once (`None`: not limited).
    pub max_jobs: Option<usize>,
}

/// Resources in use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// CPU in millicores.
    pub millicores: u64,
    /// Memory in bytes.
    pub memory: u64,
    /// Disk in bytes.
    pub disk: u64,
    /// GPUs.
    pub gpus: u32,
    /// Attempts.
    pub jobs: usize,
}

impl Usage {
    /// True if `req` fits next to what is in use.
    pub fn fits(&self, req: &Request, cap: &Capacity) -> bool {
        self.millicores + u64::from(req.millicores) <= cap.millicores
            && self.memory + req.memory <= cap.memory
            && cap.disk.is_none_or(|d| self.disk + req.disk <= d)
            && self.gpus + req.gpus <= cap.gpus
            && cap.max_jobs.is_none_or(|m| self.jobs < m)
    }

    /// Takes `req`.
    pub fn add(&mut self, req: &Request) {
        self.millicores += u64::from(req.millicores);
        self.memory += req.memory;
        self.disk += req.disk;
        self.gpus += req.gpus;
        self.jobs += 1;
    }

    /// Gives `req` back.
    pub fn sub(&mut self, req: &Request) {
        self.millicores = self.millicores.saturating_sub(u64::from(req.millicores));
        self.memory = self.memory.saturating_sub(req.memory);
        self.disk = self.disk.saturating_sub(req.disk);
        self.gpus = self.gpus.saturating_sub(req.gpus);
        self.jobs = self.jobs.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_never_oversubscribes() {
        let cap = Capacity {
            millicores: 2000,
            memory: 4 << 30,
            disk: None,
            gpus: 0,
            max_jobs: None,
        };
        let req = Request {
            millicores: 1000,
            memory: 1 << 30,
            disk: 1 << 30,
            gpus: 0,
            preemptible: false,
        };
        let mut u = Usage::default();
        assert!(u.fits(&req, &cap));
        u.add(&req);
        u.add(&req);
        assert!(!u.fits(&req, &cap), "cores are used up");
        u.sub(&req);
        assert!(u.fits(&req, &cap));
        let gpu = Request { gpus: 1, ..req };
        assert!(!u.fits(&gpu, &cap), "no GPUs here");
    }
}

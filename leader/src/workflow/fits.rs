//! Does every job fit on some machine? Checked before anything runs, so a
//! job that can never be scheduled is a configuration error with a position,
//! not a workflow that waits forever.

use super::diag::{Diagnostic, Diagnostics};
use super::spec::{Defaults, JobTemplate, Machine, Workflow};
use super::units::{format_cores, format_size};

/// Job settings that apply when neither the job nor the file's `defaults:`
/// set them: the leader's `--defaultCores`, `--defaultMemory`,
/// `--defaultDisk` and `--retryCount`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResolvedDefaults {
    /// CPU in millicores.
    pub millicores: u32,
    /// Memory in bytes.
    pub memory: u64,
    /// Disk in bytes.
    pub disk: u64,
    /// User retries.
    pub retries: u32,
}

impl ResolvedDefaults {
    /// These defaults with the file's `defaults:` section applied on top.
    pub fn overridden_by(&self, file: &Defaults) -> ResolvedDefaults {
        ResolvedDefaults {
            millicores: file.millicores.unwrap_or(self.millicores),
            memory: file.memory.unwrap_or(self.memory),
            disk: file.disk.unwrap_or(self.disk),
            retries: file.retries.unwrap_or(self.retries),
        }
    }
}

/// What one instance of a job asks for, defaults applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resources {
    /// CPU in millicores.
    pub millicores: u32,
    /// Memory in bytes.
    pub memory: u64,
    /// Disk in bytes.
    pub disk: u64,
    /// Whole GPUs.
    pub gpus: u32,
}

impl Resources {
    /// True when a machine can hold one instance.
    pub fn fit_on(&self, m: &Machine) -> bool {
        u64::from(self.millicores) <= m.millicores
            && self.memory <= m.memory
            && m.disk.is_none_or(|d| self.disk <= d)
            && self.gpus <= m.gpus
    }
}

impl JobTemplate {
    /// What one instance asks for: its own fields, else `defaults` (which
    /// should already include the file's `defaults:`, see
    /// [`ResolvedDefaults::overridden_by`]).
    pub fn resources(&self, defaults: &ResolvedDefaults) -> Resources {
        Resources {
            millicores: self.millicores.unwrap_or(defaults.millicores),
            memory: self.memory.unwrap_or(defaults.memory),
            disk: self.disk.unwrap_or(defaults.disk),
            gpus: self.gpus,
        }
    }
}

/// Checks every job fits on at least one of `machines` (all of them when
/// there is none to compare with). `defaults` are the leader's; the file's
/// `defaults:` are applied on top here, so passing already-merged defaults
/// is fine too.
pub fn check_fits(
    wf: &Workflow,
    defaults: &ResolvedDefaults,
    machines: &[Machine],
) -> Result<(), Diagnostics> {
    if machines.is_empty() {
        return Ok(());
    }
    let defaults = defaults.overridden_by(&wf.defaults);
    let mut diags = Vec::new();
    for job in &wf.jobs {
        let r = job.resources(&defaults);
        if machines.iter().any(|m| r.fit_on(m)) {
            continue;
        }
        let best = closest_machine(&r, machines);
        diags.push(too_large(wf, job, &r, best, machines.len()));
    }
    if diags.is_empty() {
        Ok(())
    } else {
        Err(Diagnostics(diags))
    }
}

/// The machine that comes nearest to holding `r`: fewest dimensions short,
/// then most memory, then most cores.
fn closest_machine<'m>(r: &Resources, machines: &'m [Machine]) -> &'m Machine {
    let short = |m: &Machine| {
        usize::from(u64::from(r.millicores) > m.millicores)
            + usize::from(r.memory > m.memory)
            + usize::from(m.disk.is_some_and(|d| r.disk > d))
            + usize::from(r.gpus > m.gpus)
    };
    let mut best = &machines[0];
    for m in &machines[1..] {
        let key = |m: &Machine| (std::cmp::Reverse(short(m)), m.memory, m.millicores);
        if key(m) > key(best) {
            best = m;
        }
    }
    best
}

fn too_large(wf: &Workflow, job: &JobTemplate, r: &Resources, m: &Machine, n: usize) -> Diagnostic {
    let from_default = |set: bool| if set { "" } else { " (the default)" };
    let mut asks = vec![
        format!(
            "{}{}",
            cores(&format_cores(r.millicores)),
            from_default(job.millicores.is_some())
        ),
        format!(
            "{} of memory{}",
            format_size(r.memory),
            from_default(job.memory.is_some())
        ),
    ];
    let mut has = vec![
        cores(&format_millicores(m.millicores)),
        format!("{} of memory", format_size(m.memory)),
    ];
    if let Some(d) = m.disk {
        asks.push(format!(
            "{} of disk{}",
            format_size(r.disk),
            from_default(job.disk.is_some())
        ));
        has.push(format!("{} of disk", format_size(d)));
    }
    if r.gpus > 0 || m.gpus > 0 {
        asks.push(gpus(r.gpus));
        has.push(gpus(m.gpus));
    }
    let mut fixes = Vec::new();
    if u64::from(r.millicores) > m.millicores {
        fixes.push("lower cores: or raise --maxCores");
    }
    if r.memory > m.memory {
        fixes.push("lower memory: or raise --maxMemory");
    }
    if m.disk.is_some_and(|d| r.disk > d) {
        fixes.push("lower disk: or use machines with more disk");
    }
    if r.gpus > m.gpus {
        fixes.push("lower gpus: or use nodes with GPUs");
    }
    let largest = if n == 1 { "" } else { "the closest, " };
    Diagnostic {
        file: wf.source.clone(),
        pos: job.resources_pos,
        message: format!(
            "job \"{}\" is larger than any machine it could run on: it asks for {}, but {}{} has {}",
            job.name,
            asks.join(", "),
            largest,
            m.name,
            has.join(", ")
        ),
        hint: Some(format!(
            "{} (in the job, or for every job in defaults:), or run on bigger nodes",
            fixes.join("; ")
        )),
    }
}

fn cores(n: &str) -> String {
    if n == "1" {
        "1 core".into()
    } else {
        format!("{n} cores")
    }
}

fn gpus(n: u32) -> String {
    if n == 1 {
        "1 GPU".into()
    } else {
        format!("{n} GPUs")
    }
}

/// Machine sizes are `u64` millicores; anything beyond `u32` is "plenty".
fn format_millicores(m: u64) -> String {
    u32::try_from(m)
        .map(format_cores)
        .unwrap_or_else(|_| m.div_ceil(1000).to_string())
}

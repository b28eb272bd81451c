//! Live telemetry: one reused sysinfo `System` (CPU use is the difference between two refreshes,
//! so it must be kept), temperature sensors where the OS exposes them, and NVIDIA GPUs through
//! NVML when the driver is present. Sampling blocks; callers run it off the async workers.

use ambient_protocol::{GpuInfo, Temperature};
use sysinfo::{
    Components, CpuRefreshKind, MemoryRefreshKind, ProcessRefreshKind, ProcessesToUpdate,
    RefreshKind, System,
};

/// One sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Global CPU use, 0–100.
    pub cpu_usage_pct: f32,
    /// Logical CPUs.
    pub cpu_count: u32,
    /// 1, 5, 15 minute load.
    pub load_avg: [f64; 3],
    /// Physical memory.
    pub mem_total_bytes: u64,
    /// Available memory.
    pub mem_available_bytes: u64,
    /// Temperature sensors.
    pub temperatures: Vec<Temperature>,
    /// GPUs.
    pub gpus: Vec<GpuInfo>,
    /// Resident memory of this process (0 where unknown).
    pub agent_rss_bytes: u64,
}

/// The sampler. Create once; call [`Telemetry::sample`] on every tick.
pub struct Telemetry {
    sys: Option<System>,
    components: Option<Components>,
    #[cfg(feature = "nvml")]
    nvml: Option<nvml_wrapper::Nvml>,
}

impl Telemetry {
    /// Opens the OS sources. Missing ones (no sensors, no NVIDIA driver) are simply absent.
    pub fn new() -> Telemetry {
        let sys = System::new_with_specifics(
            RefreshKind::nothing()
                .with_cpu(CpuRefreshKind::nothing().with_usage())
                .with_memory(MemoryRefreshKind::everything()),
        )
        .map_err(|e| tracing::warn!(error = %e, "CPU and memory telemetry unavailable."))
        .ok();
        let components = Components::new_with_refreshed_list().ok();
        #[cfg(feature = "nvml")]
        let nvml = match nvml_wrapper::Nvml::init() {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::debug!(error = %e, "No NVIDIA GPU (NVML unavailable).");
                None
            }
        };
        Telemetry {
            sys,
            components,
            #[cfg(feature = "nvml")]
            nvml,
        }
    }

    /// Takes a sample.
    pub fn sample(&mut self) -> Sample {
        let (cpu_usage_pct, cpu_count, mem_total_bytes, mem_available_bytes) = match &mut self.sys {
            Some(sys) => {
                sys.refresh_cpu_usage();
                sys.refresh_memory();
                (
                    sys.global_cpu_usage(),
                    sys.cpus().len() as u32,
                    sys.total_memory(),
                    sys.available_memory(),
                )
            }
            None => (0.0, 0, 0, 0),
        };
        let agent_rss_bytes = match (&mut self.sys, sysinfo::get_current_pid()) {
            (Some(sys), Ok(me)) => {
                sys.refresh_processes_specifics(
                    ProcessesToUpdate::Some(&[me]),
                    false,
                    ProcessRefreshKind::nothing().with_memory(),
                );
                sys.process(me).map_or(0, |p| p.memory())
            }
            _ => 0,
        };
        let load_avg = System::load_average()
            .map(|l| [l.one, l.five, l.fifteen])
            .unwrap_or_default();
        let mut temperatures = Vec::new();
        if let Some(c) = &mut self.components {
            c.refresh(false);
            for comp in c.iter() {
                if let Some(t) = comp.temperature().filter(|t| t.is_finite()) {
                    temperatures.push(Temperature {
                        label: comp.label().to_string(),
                        celsius: t,
                    });
                }
            }
        }
        Sample {
            cpu_usage_pct,
            cpu_count,
            load_avg,
            mem_total_bytes,
            mem_available_bytes,
            temperatures,
            gpus: self.gpus(),
            agent_rss_bytes,
        }
    }

    /// GPUs found now.
    pub fn gpus(&self) -> Vec<GpuInfo> {
        #[cfg(feature = "nvml")]
        if let Some(nvml) = &self.nvml {
            let driver = nvml.sys_driver_version().ok();
            let count = nvml.device_count().unwrap_or(0);
            return (0..count)
                .filter_map(|i| {
                    let dev = nvml.device_by_index(i).ok()?;
                    Some(GpuInfo {
                        name: dev.name().ok()?,
                        memory_total_bytes: dev.memory_info().map(|m| m.total).unwrap_or(0),
                        backend: "nvml".into(),
                        driver: driver.clone(),
                    })
                })
                .collect();
        }
        Vec::new()
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_plausible() {
        let mut t = Telemetry::new();
        let _ = t.sample();
        std::thread::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
        let s = t.sample();
        assert!(s.cpu_count >= 1);
        assert!((0.0..=100.0).contains(&s.cpu_usage_pct));
        assert!(s.mem_total_bytes > 0 && s.mem_available_bytes <= s.mem_total_bytes);
        // The real memory size, read independently from /proc.
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
        let kib: u64 = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(s.mem_total_bytes, kib * 1024);
        // This process's resident size, also read from /proc.
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let rss_kib: u64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap()
            .parse()
            .unwrap();
        let rss = rss_kib * 1024;
        assert!(
            s.agent_rss_bytes > rss / 2 && s.agent_rss_bytes < rss * 2,
            "{} vs {rss}",
            s.agent_rss_bytes
        );
    }
}

//! What every benchmark prints about the machine it ran on, so that a figure always comes
//! with the hardware and the load it was measured under. Included by each bench with
//! `#[path = "common/machine.rs"] mod machine;` (a folder of its own, so that Cargo does not
//! take it for a benchmark).

/// The 1, 5 and 15 minute load averages: other work on the machine skews the figures.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|| "unknown".to_string())
}

/// "machine: N CPUs (model), M GiB RAM", from /proc.
pub fn machine_line() -> String {
    let cpus = std::thread::available_parallelism()
        .map(|count| count.get())
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split(':').nth(1))
                .map(|model| model.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("MemTotal:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<f64>().ok())
        })
        .map(|kib| format!("{:.0} GiB", kib / 1048576.0))
        .unwrap_or_else(|| "? GiB".to_string());
    format!("machine: {cpus} CPUs ({model}), {memory} RAM")
}

//! What a benchmark records about the machine and its processes, read from `/proc`.
//!
//! Place: beside every measurement, so that a table row says where it was taken (STYLE.md
//! practice 13). Linux only; a value that cannot be read is `None` or `"unknown"`, never a
//! guess.

use std::fs;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

/// Memory of one process from `/proc/PID/smaps_rollup`, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rollup {
    /// Resident pages, shared ones counted in full.
    pub rss_kib: u64,
    /// Proportional set size: shared pages divided among the processes that map them.
    pub pss_kib: u64,
    /// Resident anonymous memory (heap, stacks): what connections cost.
    pub anonymous_kib: u64,
}

/// The machine a run happens on.
#[derive(Debug, Clone)]
pub struct Machine {
    /// `/proc/sys/kernel/hostname`.
    pub hostname: String,
    /// The first `model name` of `/proc/cpuinfo`.
    pub cpu: String,
    /// CPUs this process may run on.
    pub cores: usize,
    /// `/proc/sys/kernel/osrelease` (what `uname -r` prints).
    pub kernel: String,
    /// `rustc --version` of the toolchain on PATH.
    pub rustc: String,
}

impl Machine {
    /// Reads everything once.
    pub fn probe() -> Machine {
        Machine {
            hostname: proc_line("/proc/sys/kernel/hostname"),
            cpu: cpu_model(),
            cores: std::thread::available_parallelism().map_or(0, usize::from),
            kernel: proc_line("/proc/sys/kernel/osrelease"),
            rustc: command_line("rustc", &["--version"]),
        }
    }
}

/// `VmRSS` of process `pid` in KiB.
pub fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    kib_field(&status, "VmRSS:")
}

/// `VmRSS` of this process in KiB.
pub fn own_rss_kib() -> Option<u64> {
    vm_rss_kib(std::process::id())
}

/// `/proc/PID/smaps_rollup`, when the kernel has it (4.14 and later).
pub fn rollup(pid: u32) -> Option<Rollup> {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    Some(Rollup {
        rss_kib: kib_field(&text, "Rss:")?,
        pss_kib: kib_field(&text, "Pss:")?,
        anonymous_kib: kib_field(&text, "Anonymous:")?,
    })
}

/// Memory the kernel holds for TCP sockets, all processes together, in KiB
/// (`mem` of the `TCP:` line of `/proc/net/sockstat`, which counts pages).
pub fn kernel_tcp_kib() -> Option<u64> {
    let text = fs::read_to_string("/proc/net/sockstat").ok()?;
    let line = text.lines().find(|l| l.starts_with("TCP:"))?;
    let mut words = line.split_whitespace();
    words.find(|&w| w == "mem")?;
    let pages: u64 = words.next()?.parse().ok()?;
    Some(pages * page_kib())
}

/// CPU time process `pid` has used so far, user and system, in seconds (`/proc/PID/stat`).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: count fields after its last `)`.
    // Then `state` is the first; `utime` and `stime` (fields 14 and 15) are the 12th and 13th.
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / clock_ticks())
}

/// The soft limit on open files of this process (`Max open files` in `/proc/self/limits`).
pub fn open_file_limit() -> Option<u64> {
    let text = fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The first line a program prints, or `"unknown"` when it cannot be run.
pub fn command_line(program: &str, args: &[&str]) -> String {
    let output = Command::new(program).args(args).output();
    let Ok(output) = output.as_ref() else { return "unknown".to_owned() };
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines().next().map_or_else(|| "unknown".to_owned(), |l| l.trim().to_owned())
}

/// Everything a program prints on stdout, or `""` when it cannot be run.
pub fn command_output(program: &str, args: &[&str]) -> String {
    let output = Command::new(program).args(args).output();
    output.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default()
}

/// The current UTC time as `YYYY-MM-DD HH:MM UTC`.
pub fn utc_now() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_date(days as i64);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02} UTC", rem / 3600, rem % 3600 / 60)
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_date(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn cpu_model() -> String {
    let text = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let line = text.lines().find(|l| l.starts_with("model name"));
    let model = line.and_then(|l| l.split_once(':')).map(|(_, v)| v.trim().to_owned());
    model.unwrap_or_else(|| "unknown".to_owned())
}

fn proc_line(path: &str) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let line = text.trim();
    if line.is_empty() {
        "unknown".to_owned()
    } else {
        line.to_owned()
    }
}

/// The number after `name` on its line of a `/proc` key-value file (values in kB).
fn kib_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

/// Page size in KiB, as `getconf PAGESIZE` reports it.
/// Ticks per second of the times in `/proc/PID/stat` (`USER_HZ`, 100 on Linux x86).
fn clock_ticks() -> f64 {
    command_line("getconf", &["CLK_TCK"]).parse().unwrap_or(100.0)
}

fn page_kib() -> u64 {
    let bytes: u64 = command_line("getconf", &["PAGESIZE"]).parse().unwrap_or(4096);
    bytes / 1024
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_processs_cpu_time() {
        let before = cpu_seconds(std::process::id()).expect("own stat");
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(50) {
            std::hint::black_box(spin.elapsed());
        }
        let after = cpu_seconds(std::process::id()).expect("own stat");
        assert!(after > before && after - before < 5.0, "{before} then {after}");
    }

    #[test]
    fn converts_day_counts_to_dates() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(11_016), (2000, 2, 29));
        assert_eq!(civil_date(19_723), (2024, 1, 1));
    }

    #[test]
    fn reads_kib_fields() {
        let status = "Name:\tx\nVmRSS:\t   1234 kB\nVmSwap:\t0 kB\n";
        assert_eq!(kib_field(status, "VmRSS:"), Some(1234));
        assert_eq!(kib_field(status, "VmHWM:"), None);
    }

    #[test]
    fn reads_this_process() {
        assert!(own_rss_kib().is_some_and(|kib| kib > 0));
    }
}

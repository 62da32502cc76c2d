//! `sys/host-info`: the host's CPUs, CPU times, disks, identity and memory, in the shape Vault
//! gives them (gopsutil's field names), read from Linux's `/proc` and `statvfs`.
//!
//! Guarantees: only facts about the machine, never configuration or data of the server; a
//! source that cannot be read leaves its part empty rather than failing the request.
//! Not done: other systems than Linux (the parts are then empty). Every memory field gopsutil
//! has is present; one `/proc/meminfo` does not have (e.g. `HighTotal` on 64-bit) is 0, as there.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::logical::{Error, Response, Result};

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// `/proc/cpuinfo`, one object per processor.
fn cpus() -> Vec<Value> {
    let mut out = Vec::new();
    for block in read("/proc/cpuinfo").split("\n\n").filter(|b| !b.trim().is_empty()) {
        let kv: BTreeMap<&str, &str> = block
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim(), v.trim()))
            .collect();
        let get = |k: &str| kv.get(k).copied().unwrap_or_default();
        let int = |k: &str| get(k).split_whitespace().next().and_then(|n| n.parse::<i64>().ok());
        out.push(json!({
            "cpu": int("processor").unwrap_or(0),
            "vendorId": get("vendor_id"),
            "family": get("cpu family"),
            "model": get("model"),
            "stepping": int("stepping").unwrap_or(0),
            "physicalId": get("physical id"),
            "coreId": get("core id"),
            "cores": int("cpu cores").unwrap_or(0),
            "modelName": get("model name"),
            "mhz": get("cpu MHz").parse::<f64>().unwrap_or(0.0),
            "cacheSize": int("cache size").unwrap_or(0),
            "flags": get("flags").split_whitespace().collect::<Vec<_>>(),
            "microcode": get("microcode"),
        }));
    }
    out
}

/// `/proc/stat`'s per-CPU lines, in seconds (the kernel counts in USER_HZ, 100 on Linux).
fn cpu_times() -> Vec<Value> {
    let mut out = Vec::new();
    for line in read("/proc/stat").lines() {
        let mut it = line.split_whitespace();
        let Some(name) = it.next().filter(|n| n.starts_with("cpu") && n.len() > 3) else {
            continue;
        };
        let v: Vec<f64> = it.map(|x| x.parse::<f64>().unwrap_or(0.0) / 100.0).collect();
        let at = |i: usize| v.get(i).copied().unwrap_or(0.0);
        out.push(json!({
            "cpu": name, "user": at(0), "nice": at(1), "system": at(2), "idle": at(3),
            "iowait": at(4), "irq": at(5), "softirq": at(6), "steal": at(7), "guest": at(8),
            "guestNice": at(9),
        }));
    }
    out
}

/// Usage of `/` and of every mounted block device.
fn disks() -> Vec<Value> {
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for line in read("/proc/mounts").lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [dev, path, fstype, ..] = f.as_slice() else { continue };
        if !(dev.starts_with('/') || *path == "/") || !seen.insert((*path).to_owned()) {
            continue;
        }
        let Ok(st) = rustix::fs::statvfs(*path) else { continue };
        let total = st.f_blocks.saturating_mul(st.f_frsize);
        let free = st.f_bavail.saturating_mul(st.f_frsize);
        let used = st.f_blocks.saturating_sub(st.f_bfree).saturating_mul(st.f_frsize);
        let pct = |a: u64, b: u64| if a + b == 0 { 0.0 } else { a as f64 / (a + b) as f64 * 100.0 };
        let inodes_used = st.f_files.saturating_sub(st.f_ffree);
        out.push(json!({
            "path": path, "fstype": fstype, "total": total, "free": free, "used": used,
            "usedPercent": pct(used, free), "inodesTotal": st.f_files, "inodesUsed": inodes_used,
            "inodesFree": st.f_ffree, "inodesUsedPercent": pct(inodes_used, st.f_ffree),
        }));
    }
    out
}

fn os_release() -> BTreeMap<String, String> {
    read("/etc/os-release")
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
        .collect()
}

fn host() -> Value {
    let uptime = read("/proc/uptime")
        .split_whitespace()
        .next()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(0.0) as u64;
    let boot = read("/proc/stat")
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let procs = std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
                .count()
        })
        .unwrap_or(0);
    let os = os_release();
    let get = |k: &str| os.get(k).cloned().unwrap_or_default();
    let family = os.get("ID_LIKE").cloned().unwrap_or_else(|| get("ID"));
    json!({
        "hostname": read("/proc/sys/kernel/hostname").trim(),
        "uptime": uptime,
        "bootTime": boot,
        "procs": procs,
        "os": std::env::consts::OS,
        "platform": get("ID"),
        "platformFamily": family,
        "platformVersion": get("VERSION_ID"),
        "kernelVersion": read("/proc/sys/kernel/osrelease").trim(),
        "kernelArch": std::env::consts::ARCH,
        "virtualizationSystem": "",
        "virtualizationRole": "",
        "hostid": read("/proc/sys/kernel/random/boot_id").trim(),
    })
}

/// `/proc/meminfo` in bytes, with gopsutil's derived `used` and `usedPercent`.
fn memory() -> Value {
    let kb: BTreeMap<String, u64> = read("/proc/meminfo")
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            let n = v.split_whitespace().next()?.parse::<u64>().ok()?;
            Some((k.trim().to_owned(), n.saturating_mul(1024)))
        })
        .collect();
    let get = |k: &str| kb.get(k).copied().unwrap_or(0);
    let total = get("MemTotal");
    let available = get("MemAvailable");
    let free = get("MemFree");
    let buffers = get("Buffers");
    let cached = get("Cached") + get("SReclaimable");
    let used = total.saturating_sub(free).saturating_sub(buffers).saturating_sub(cached);
    let used_pct = if total == 0 {
        0.0
    } else {
        total.saturating_sub(available) as f64 / total as f64 * 100.0
    };
    let mut m = Map::new();
    for (name, value) in [
        ("total", total),
        ("available", available),
        ("used", used),
        ("free", free),
        ("active", get("Active")),
        ("inactive", get("Inactive")),
        ("buffers", buffers),
        ("cached", cached),
        ("writeback", get("Writeback")),
        ("dirty", get("Dirty")),
        ("shared", get("Shmem")),
        ("slab", get("Slab")),
        ("sreclaimable", get("SReclaimable")),
        ("sunreclaim", get("SUnreclaim")),
        ("pagetables", get("PageTables")),
        ("swapcached", get("SwapCached")),
        ("commitlimit", get("CommitLimit")),
        ("committedas", get("Committed_AS")),
        ("swaptotal", get("SwapTotal")),
        ("swapfree", get("SwapFree")),
        ("mapped", get("Mapped")),
        ("hugepagesize", get("Hugepagesize")),
        ("hightotal", get("HighTotal")),
        ("highfree", get("HighFree")),
        ("lowtotal", get("LowTotal")),
        ("lowfree", get("LowFree")),
        ("vmalloctotal", get("VmallocTotal")),
        ("vmallocused", get("VmallocUsed")),
        ("vmallocchunk", get("VmallocChunk")),
        ("writebacktmp", get("WritebackTmp")),
        // Counts of pages, not sizes: undo the kB scaling, as gopsutil reads them.
        ("hugepagestotal", get("HugePages_Total") / 1024),
        ("hugepagesfree", get("HugePages_Free") / 1024),
        // BSD and macOS counters gopsutil always has: zero on Linux.
        ("laundry", 0),
        ("wired", 0),
    ] {
        m.insert(name.into(), json!(value));
    }
    m.insert("usedPercent".into(), json!(used_pct));
    Value::Object(m)
}

/// `GET sys/host-info`.
pub(crate) async fn info() -> Result<Response> {
    let data = tokio::task::spawn_blocking(|| {
        json!({
            "cpu": cpus(),
            "cpu_times": cpu_times(),
            "disk": disks(),
            "host": host(),
            "memory": memory(),
            "timestamp": crate::time::rfc3339_nanos(std::time::SystemTime::now()),
        })
    })
    .await
    .map_err(|e| Error::Internal(format!("host-info task failed: {e}")))?;
    Ok(Response::from_value(data))
}

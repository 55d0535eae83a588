//! `cargo xtask vm`: the SoftRoCE VM tier.
//!
//! Boots the Debian 6.12 kernel under qemu (TCG; KVM is not usable on the
//! CI hosts) with virtme-ng, which shows the host's filesystem read-only
//! inside the VM. Inside: `modprobe rdma_rxe`, `rdma link add rxe0 type rxe
//! netdev <first non-loopback interface>`, then the command. Its exit
//! status and output are written to files under an `--rwdir` folder
//! (`target/vm/<run>/`), because the serial console can cut output; the
//! task prints the output and returns the status.
//!
//! Every step has a timeout: package installation, the boot plus the
//! command (the VM's whole process group is killed when it expires), and
//! the command inside the VM (`timeout(1)`). A hung VM fails the run with
//! a message; it never stalls CI.
//!
//! Build on the host, run in the VM: the VM cannot write the host's
//! `target/`. [`test_tier`] builds the RDMA test binaries with
//! `cargo test --no-run` and runs them inside.

use crate::{cargo, have, run};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Debian packages the VM tier needs, each with a file that shows it is
/// installed.
const VM_PACKAGES: &[(&str, &str)] = &[
    ("qemu-system-x86", "/usr/bin/qemu-system-x86_64"),
    (
        "linux-image-6.12-amd64",
        "/usr/share/doc/linux-image-6.12-amd64",
    ),
    (
        "linux-headers-6.12-amd64",
        "/usr/share/doc/linux-headers-6.12-amd64",
    ),
    ("rdma-core", "/usr/share/doc/rdma-core"),
    ("ibverbs-utils", "/usr/bin/ibv_devices"),
    ("iproute2", "/usr/bin/rdma"),
    // virtme-ng builds its initramfs with busybox.
    ("busybox-static", "/bin/busybox"),
    // setpriv, to run the memlock tests as nobody.
    ("util-linux", "/usr/bin/setpriv"),
];

/// Longest time for one apt/pip installation step.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(900);
/// Allowance for booting the VM under TCG (measured ~45 s) and shutting
/// it down, on top of the command's own timeout.
const BOOT_ALLOWANCE: Duration = Duration::from_secs(240);

/// Options of one VM run.
#[derive(Debug, Clone)]
pub(crate) struct VmOptions {
    /// Timeout for the command inside the VM.
    pub(crate) timeout: Duration,
    /// Environment set for the command.
    pub(crate) env: Vec<(String, String)>,
}

/// Run `cmd` with a hard deadline; on expiry kill its whole process group.
pub(crate) fn run_with_timeout(cmd: &mut Command, timeout: Duration, what: &str) -> Result<()> {
    use std::os::unix::process::CommandExt;
    eprintln!("$ {cmd:?}  (timeout {}s)", timeout.as_secs());
    let mut child = cmd
        .process_group(0)
        .spawn()
        .with_context(|| format!("spawning {what}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait()? {
            if st.success() {
                return Ok(());
            }
            bail!("{what} failed with {st}");
        }
        if Instant::now() >= deadline {
            kill_group(child.id());
            let _ = child.wait();
            bail!(
                "{what} timed out after {}s and was killed",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn kill_group(pgid: u32) {
    // The group leader is our child; everything it started (qemu) is in
    // its group. No broad names: only this group id.
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .status();
}

/// Install what the VM tier needs, only what is missing.
pub(crate) fn deps() -> Result<()> {
    let missing: Vec<&str> = VM_PACKAGES
        .iter()
        .filter(|(_, probe)| !Path::new(probe).exists())
        .map(|(pkg, _)| *pkg)
        .collect();
    if !missing.is_empty() {
        run_with_timeout(
            Command::new("apt-get").args(["-o", "DPkg::Lock::Timeout=300", "update", "-qq"]),
            INSTALL_TIMEOUT,
            "apt-get update",
        )?;
        run_with_timeout(
            Command::new("apt-get")
                .args(["-o", "DPkg::Lock::Timeout=300"])
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
            INSTALL_TIMEOUT,
            "apt-get install (VM tier)",
        )?;
    }
    if !have("vng") {
        run_with_timeout(
            Command::new("pip").args(["install", "-q", "virtme-ng"]),
            INSTALL_TIMEOUT,
            "pip install virtme-ng",
        )?;
    }
    Ok(())
}

/// The newest `/boot/vmlinuz-6.12.*+deb12-amd64`.
pub(crate) fn find_kernel() -> Result<PathBuf> {
    let mut found: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir("/boot")
        .context("reading /boot")?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let ver = name
                .strip_prefix("vmlinuz-6.12.")?
                .strip_suffix("+deb12-amd64")?;
            let key = std::iter::once(12)
                .chain(ver.split(['.', '-']).filter_map(|p| p.parse().ok()))
                .collect();
            Some((key, e.path()))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, p)) => Ok(p),
        None => {
            bail!("no /boot/vmlinuz-6.12.*+deb12-amd64 (apt-get install linux-image-6.12-amd64)")
        }
    }
}

pub(crate) fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// How a VM is networked.
#[derive(Debug, Clone)]
pub(crate) enum Net {
    /// qemu user-mode networking (slirp); the NIC gets 10.0.2.15/24.
    User,
    /// A second "node": a virtio NIC on a qemu socket network over host
    /// loopback (`listen` in one VM, `connect` in the other), found in the
    /// guest by its fixed MAC address and given a fixed address.
    Socket {
        /// `true` for the side that listens.
        listen: bool,
        /// Host loopback TCP port joining the two VMs.
        port: u16,
        /// The NIC's MAC address.
        mac: &'static str,
        /// The guest's IPv4 address on it (/24).
        addr: &'static str,
    },
}

/// A VM that was started and not yet waited for.
pub(crate) struct Spawned {
    child: std::process::Child,
    out: PathBuf,
    started: Instant,
    deadline: Instant,
}

/// Boot a VM (`cpus`, `memory` as vng takes them), set up rxe0 on the NIC
/// `net` describes, and run `script` (a shell fragment) in the workspace
/// root. Wait for it with [`wait_vm`].
pub(crate) fn spawn_vm(
    root: &Path,
    name: &str,
    net: &Net,
    cpus: u32,
    memory: &str,
    script: &str,
    opts: &VmOptions,
) -> Result<Spawned> {
    use std::os::unix::process::CommandExt;
    deps()?;
    let kernel = find_kernel()?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let out = root
        .join("target/vm")
        .join(format!("run-{stamp}-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&out)?;
    let out = out.canonicalize()?;
    let q = |p: &Path| shell_quote(&p.display().to_string());
    let mut env = String::new();
    for (k, v) in &opts.env {
        env.push_str(&format!("export {k}={}\n", shell_quote(v)));
    }
    let inner = out.join("cmd.sh");
    std::fs::write(&inner, format!("{env}cd {}\n{script}\n", q(root)))?;
    let net_setup = match net {
        Net::User => r#"dev=$(ls /sys/class/net | grep -v '^lo$' | head -1)
# The user-mode network is not configured by the guest init: bring the
# NIC up with slirp's fixed guest address (traffic here stays in the VM).
ip link set "$dev" up
ip -4 addr show dev "$dev" | grep -q inet || ip addr add 10.0.2.15/24 dev "$dev""#
            .to_owned(),
        Net::Socket { mac, addr, .. } => format!(
            r#"dev=
for n in /sys/class/net/*; do
    [ "$(cat "$n/address")" = "{mac}" ] && dev=$(basename "$n")
done
ip link set "$dev" up
ip addr add {addr}/24 dev "$dev""#
        ),
    };
    let init = out.join("init.sh");
    std::fs::write(
        &init,
        format!(
            r#"#!/bin/sh
# Runs as root inside the VM. Everything goes to files under the rwdir.
OUT={out}
exec >"$OUT/setup.log" 2>&1
echo "kernel $(uname -r)"
{net_setup}
echo "netdev $dev"
if [ -z "$dev" ] || ! modprobe rdma_rxe || ! rdma link add rxe0 type rxe netdev "$dev"; then
    echo "SoftRoCE set-up failed" >"$OUT/output.txt"
    echo 97 >"$OUT/status"
    exit 0
fi
# No udev here: let unprivileged users open the uverbs device.
chmod 0666 /dev/infiniband/* 2>/dev/null
for i in $(seq 60); do
    rdma link show rxe0/1 | grep -q 'state ACTIVE' && break
    sleep 1
done
rdma link show
ip -br addr
ulimit -l 8192
echo "memlock $(ulimit -l) KiB"
timeout -k 10 {secs} sh {inner} >"$OUT/output.txt" 2>&1
echo $? >"$OUT/status.tmp" && mv "$OUT/status.tmp" "$OUT/status"
"#,
            out = q(&out),
            secs = opts.timeout.as_secs(),
            inner = q(&inner),
        ),
    )?;
    let mut vng = Command::new("vng");
    vng.arg("--disable-kvm").arg("--run").arg(&kernel).args([
        "--memory",
        memory,
        "--cpus",
        &cpus.to_string(),
    ]);
    match net {
        Net::User => {
            vng.args(["--network", "user"]);
        }
        Net::Socket {
            listen, port, mac, ..
        } => {
            let side = if *listen { "listen" } else { "connect" };
            vng.arg(format!(
                "--qemu-opts=-netdev socket,id=n1,{side}=127.0.0.1:{port} \
                 -device virtio-net-pci,netdev=n1,mac={mac}"
            ));
        }
    }
    vng.arg("--rwdir")
        .arg(&out)
        .arg("--exec")
        .arg(format!("sh {}", q(&init)))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(out.join("console.log"))?)
        .stderr(std::fs::File::create(out.join("console.err"))?)
        .process_group(0);
    let budget = opts.timeout + BOOT_ALLOWANCE;
    eprintln!("$ {vng:?}  (timeout {}s)", budget.as_secs());
    let child = vng.spawn().context("spawning vng")?;
    let started = Instant::now();
    Ok(Spawned {
        child,
        out,
        started,
        deadline: started + budget,
    })
}

/// Wait for a VM started by [`spawn_vm`] (killing it at its deadline) and
/// return (exit status of the script, its output).
pub(crate) fn wait_vm(mut vm: Spawned) -> Result<(i32, String)> {
    let out = vm.out.clone();
    let booted: Result<()> = loop {
        match vm.child.try_wait()? {
            Some(st) if st.success() => break Ok(()),
            Some(st) => break Err(anyhow::anyhow!("vng failed with {st}")),
            None if Instant::now() >= vm.deadline => {
                kill_group(vm.child.id());
                let _ = vm.child.wait();
                break Err(anyhow::anyhow!(
                    "the VM timed out after {} s and was killed",
                    vm.started.elapsed().as_secs()
                ));
            }
            None => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    eprintln!(
        "VM run took {:.0} s; files in {}",
        vm.started.elapsed().as_secs_f64(),
        out.display()
    );
    let output = std::fs::read_to_string(out.join("output.txt")).unwrap_or_default();
    let status = std::fs::read_to_string(out.join("status"))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok());
    let setup = || std::fs::read_to_string(out.join("setup.log")).unwrap_or_default();
    match (booted, status) {
        (_, Some(st)) => Ok((st, output)),
        (Err(e), None) => bail!(
            "{e}; no exit status from the VM.\nsetup.log:\n{}\noutput so far:\n{output}\n\
             console: {}",
            setup(),
            out.join("console.log").display()
        ),
        (Ok(()), None) => {
            let console = std::fs::read_to_string(out.join("console.err")).unwrap_or_default();
            bail!(
                "the VM exited without writing an exit status.\nsetup.log:\n{}\n\
                 vng stderr:\n{console}\noutput so far:\n{output}",
                setup()
            )
        }
    }
}

/// Boot one VM on user networking and run `script` in it.
pub(crate) fn run_in_vm(root: &Path, script: &str, opts: &VmOptions) -> Result<(i32, String)> {
    let vm = spawn_vm(root, "vm", &Net::User, 2, "2G", script, opts)?;
    wait_vm(vm)
}

/// `true` once something listens on 127.0.0.1:`port` (from
/// /proc/net/tcp, without connecting: qemu's socket netdev accepts only
/// one connection, which must be the other VM's).
fn listening(port: u16) -> bool {
    let want = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp").is_ok_and(|t| {
        t.lines().skip(1).any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1] == want && f[3] == "0A"
        })
    })
}

/// The guest addresses of [`spawn_pair`]'s two VMs.
pub(crate) const PAIR_ADDRS: (&str, &str) = ("192.168.77.1", "192.168.77.2");

/// Two VMs joined by a qemu socket network on host loopback, rxe on the
/// joined NICs ([`PAIR_ADDRS`], nothing else routed), each running its
/// script: node 1 listens, node 2 connects (started once node 1's qemu
/// listens). Wait for each with [`wait_vm`].
pub(crate) fn spawn_pair(
    root: &Path,
    node1: (&str, &VmOptions),
    node2: (&str, &VmOptions),
) -> Result<(Spawned, Spawned)> {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let a = spawn_vm(
        root,
        "node1",
        &Net::Socket {
            listen: true,
            port,
            mac: "52:54:00:72:64:01",
            addr: PAIR_ADDRS.0,
        },
        1,
        "1G",
        node1.0,
        node1.1,
    )?;
    let t0 = Instant::now();
    while !listening(port) {
        if t0.elapsed() > Duration::from_secs(120) {
            kill_group(a.child.id());
            bail!("node 1's qemu never listened on 127.0.0.1:{port}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let b = spawn_vm(
        root,
        "node2",
        &Net::Socket {
            listen: false,
            port,
            mac: "52:54:00:72:64:02",
            addr: PAIR_ADDRS.1,
        },
        1,
        "1G",
        node2.0,
        node2.1,
    )?;
    Ok((a, b))
}

/// The two-node RDMA test in two VMs ([`spawn_pair`]).
pub(crate) fn two_nodes(root: &Path, timeout: u64) -> Result<()> {
    let bins = build_test_binaries(&[("regcache-transport", "rdma_nodes")])?;
    let bin = shell_quote(&bins[0].display().to_string());
    let node = |role: &str| VmOptions {
        timeout: Duration::from_secs(timeout),
        env: vec![
            ("REGCACHE_REQUIRE_RDMA".into(), "1".into()),
            ("RDMA_NODE_ROLE".into(), role.into()),
            ("RDMA_NODE_ADDR".into(), format!("{}:7471", PAIR_ADDRS.0)),
        ],
    };
    let script = format!("{bin} --test-threads=1 --nocapture");
    let (a, b) = spawn_pair(
        root,
        (&script, &node("listen")),
        (&script, &node("connect")),
    )?;
    let rb = wait_vm(b);
    let ra = wait_vm(a);
    let mut failed = false;
    for (name, r) in [("node 1", ra), ("node 2", rb)] {
        match r {
            Ok((st, output)) => {
                println!("== {name} (status {st})\n{output}");
                failed |= st != 0;
            }
            Err(e) => {
                println!("== {name}: {e:#}");
                failed = true;
            }
        }
    }
    if failed {
        bail!("two-node RDMA run failed");
    }
    Ok(())
}

/// `cargo xtask vm [--timeout S] [--two-nodes] [-- CMD...]`: run CMD
/// (default: the VM test tier) in the VM and return its status; with
/// `--two-nodes`, the two-node RDMA test in two VMs.
pub(crate) fn vm(root: &Path, timeout: u64, two: bool, cmd: &[String]) -> Result<()> {
    if two {
        if !cmd.is_empty() {
            bail!("--two-nodes runs the two-node RDMA test; it takes no command");
        }
        return two_nodes(root, timeout);
    }
    if cmd.is_empty() {
        return test_tier(root);
    }
    let script = cmd
        .iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ");
    let opts = VmOptions {
        timeout: Duration::from_secs(timeout),
        env: vec![("REGCACHE_REQUIRE_RDMA".into(), "1".into())],
    };
    let (st, output) = run_in_vm(root, &script, &opts)?;
    print!("{output}");
    if st != 0 {
        bail!("command in the VM exited with status {st}");
    }
    Ok(())
}

/// Test executables of `cargo test --no-run` for the given targets.
pub(crate) fn build_test_binaries(targets: &[(&str, &str)]) -> Result<Vec<PathBuf>> {
    let mut cmd = cargo();
    cmd.args(["test", "--no-run", "--locked", "--message-format=json"]);
    for (pkg, test) in targets {
        cmd.args(["-p", pkg, "--test", test]);
    }
    eprintln!("$ {cmd:?}");
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .context("cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the VM tier's test binaries failed");
    }
    let mut found = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["reason"] == "compiler-artifact" && v["profile"]["test"] == true {
            if let (Some(name), Some(exe)) =
                (v["target"]["name"].as_str(), v["executable"].as_str())
            {
                found.push((name.to_owned(), PathBuf::from(exe)));
            }
        }
    }
    // In the order asked for (cargo reports them as they finish).
    targets
        .iter()
        .map(|(_, test)| {
            found
                .iter()
                .find(|(name, _)| name == test)
                .map(|(_, exe)| exe.clone())
                .with_context(|| format!("no test binary {test} in {found:?}"))
        })
        .collect()
}

/// The VM tier of `cargo xtask test`: the verbs registrar tests as
/// `nobody` (so `RLIMIT_MEMLOCK` applies), the RDMA transport tests as
/// root, against SoftRoCE; then the two-node test in two VMs
/// (`REGCACHE_SKIP_TWO_NODES=1` leaves it out).
pub(crate) fn test_tier(root: &Path) -> Result<()> {
    let bins = build_test_binaries(&[
        ("regcache", "verbs"),
        ("regcache", "verbs_cache"),
        ("regcache-transport", "rdma"),
    ])?;
    let [verbs, verbs_cache, rdma] =
        [&bins[0], &bins[1], &bins[2]].map(|p| shell_quote(&p.display().to_string()));
    run(cargo().args([
        "build",
        "--locked",
        "-p",
        "regcache-bench",
        "--bin",
        "regcache-bench",
    ]))?;
    let bench = shell_quote(
        &root
            .join("target/debug/regcache-bench")
            .display()
            .to_string(),
    );
    let (prefix, stale) = crate::capi::vm_inputs(root)?;
    let libdir = shell_quote(&prefix.join("lib").display().to_string());
    let pmpi = shell_quote(&prefix.join("lib/libregcache_pmpi.so").display().to_string());
    let stale = shell_quote(&stale.display().to_string());
    let script = format!(
        r#"st=0
echo "== the C API with the verbs registrar: stale registration, 2 ranks under mpirun"
export OMPI_MCA_btl=self,vader OMPI_MCA_pml=ob1
mpi="mpirun --allow-run-as-root --oversubscribe -np 2 -x LD_LIBRARY_PATH={libdir} -x REGCACHE_REGISTRAR=verbs"
w=$(mktemp -d)
(cd "$w" && timeout 600 $mpi {stale}) >"$w/stale.txt" 2>&1
cat "$w/stale.txt"
grep -q 'stale_registration: PASSED (2 ranks)' "$w/stale.txt" || {{ echo "FAILED: stale registration with verbs"; st=1; }}
echo "== NetPIPE under the PMPI library with the verbs registrar"
(cd "$w" && timeout 900 $mpi -x LD_PRELOAD={pmpi} NPopenmpi -u 262144 -p 0) >"$w/np.txt" 2>&1
cat "$w/np.txt"
tail -1 "$w/np.out" | grep -q '^ *262144 ' || {{ echo "FAILED: NetPIPE did not reach 262144 bytes"; st=1; }}
for r in 0 1; do
    grep "regcache-pmpi: rank $r: " "$w/np.txt" | grep -q 'registrar verbs' ||
        {{ echo "FAILED: rank $r printed no statistics with the verbs registrar"; st=1; }}
done
echo "== regcache-bench on the built-in workloads (--quick) with the verbs registrar (ibv_reg_mr on rxe0)"
{bench} --quick --registrar verbs --monitor uffd || st=1
echo "== verbs registrar tests, as nobody (RLIMIT_MEMLOCK $(ulimit -l) KiB)"
for t in {verbs} {verbs_cache}; do
    REGCACHE_REQUIRE_UNPRIVILEGED=1 setpriv --reuid=65534 --regid=65534 --clear-groups \
        "$t" --test-threads=1 || st=1
done
echo "== RDMA transport tests"
{rdma} --test-threads=1 || st=1
exit $st
"#
    );
    let opts = VmOptions {
        timeout: Duration::from_secs(1200),
        env: vec![("REGCACHE_REQUIRE_RDMA".into(), "1".into())],
    };
    let (st, output) = run_in_vm(root, &script, &opts)?;
    print!("{output}");
    if st != 0 {
        bail!("VM tier failed (status {st})");
    }
    if std::env::var("REGCACHE_SKIP_TWO_NODES").as_deref() == Ok("1") {
        eprintln!("two-node VM tier SKIPPED: REGCACHE_SKIP_TWO_NODES=1");
        return Ok(());
    }
    two_nodes(root, 900)
}

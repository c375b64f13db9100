//! The shim's `start` as each containerd release calls it, byte for byte, with no containerd:
//! 2.3's bootstrap protocol (protobuf `BootstrapParams` on stdin, `BootstrapResult` out,
//! then task API v3) and the legacy form of 1.6–2.2 (options or nothing in, the address as
//! text out, then task API v2). The serving shim answers both APIs on one socket and ends
//! on Shutdown, removing its socket. Needs root (the legacy socket is in /run/containerd/s).

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use libtest_mimic::Failed;
use protobuf::{CodedInputStream, CodedOutputStream};

const SHIM: &str = "containerd-shim-hako-v2";
const NAMESPACE: &str = "hako-start-protocol";

/// `BootstrapParams` as containerd 2.3's `pkg/shim` marshals it
/// (api/runtime/bootstrap/v1/bootstrap.proto): identity, log level, containerd's version and
/// addresses, the runtime options as an extension, the socket directory.
fn bootstrap_params(id: &str, ttrpc: &Path, socket_dir: &Path) -> Vec<u8> {
    fn message(f: impl FnOnce(&mut CodedOutputStream) -> protobuf::Result<()>) -> Vec<u8> {
        let mut out = Vec::new();
        let mut s = CodedOutputStream::vec(&mut out);
        f(&mut s)
            .and_then(|()| s.flush())
            .expect("encoding to a Vec");
        drop(s);
        out
    }
    let options = message(|s| s.write_string(2, "/etc/hako/config.toml"));
    let any = message(|s| {
        s.write_string(1, "runtimeoptions.v1.Options")?;
        s.write_bytes(2, &options)
    });
    let extension = message(|s| s.write_bytes(1, &any));
    message(|s| {
        s.write_string(1, id)?;
        s.write_string(2, NAMESPACE)?;
        s.write_int32(3, -4)?; // LOG_LEVEL_DEBUG
        s.write_string(4, "2.3.4")?;
        s.write_string(5, &ttrpc.display().to_string())?;
        s.write_string(6, "/run/containerd/containerd.sock")?;
        s.write_string(7, "/usr/bin/containerd")?;
        s.write_bytes(8, &extension)?;
        s.write_string(9, &socket_dir.display().to_string())
    })
}

/// `BootstrapResult` → (version, address, protocol).
fn bootstrap_result(bytes: &[u8]) -> Result<(i32, String, String), String> {
    let mut s = CodedInputStream::from_bytes(bytes);
    let (mut version, mut address, mut protocol) = (0, String::new(), String::new());
    while let Some(tag) = s.read_raw_tag_or_eof().map_err(|e| e.to_string())? {
        match tag {
            0x08 => version = s.read_int32().map_err(|e| e.to_string())?,
            0x12 => address = s.read_string().map_err(|e| e.to_string())?,
            0x1a => protocol = s.read_string().map_err(|e| e.to_string())?,
            t => return Err(format!("unexpected field tag {t:#x} in the result")),
        }
    }
    Ok((version, address, protocol))
}

/// Runs `start` for task `id` in `bundle` with `stdin`; `ttrpc_env` sets TTRPC_ADDRESS.
fn start(
    bundle: &Path,
    id: &str,
    stdin: &[u8],
    ttrpc_env: Option<&Path>,
) -> Result<std::process::Output, Failed> {
    let shim = hako_tests::fixtures::workspace_binary(SHIM)?;
    let mut cmd = Command::new(shim);
    cmd.current_dir(bundle)
        .env_remove("TTRPC_ADDRESS")
        .args(["-namespace", NAMESPACE, "-id", id])
        .arg("-address")
        .arg(bundle.join("containerd.sock"))
        .args(["-publish-binary", "/usr/bin/containerd", "start"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(a) = ttrpc_env {
        cmd.env("TTRPC_ADDRESS", a);
    }
    let mut child = cmd.spawn().map_err(|e| format!("starting {SHIM}: {e}"))?;
    if let Some(mut i) = child.stdin.take() {
        i.write_all(stdin).map_err(|e| e.to_string())?;
    }
    Ok(child.wait_with_output().map_err(|e| e.to_string())?)
}

/// Calls `<service>/Connect` on `address`; returns the shim's pid.
async fn connect(client: &ttrpc::asynchronous::Client, service: &str) -> Result<u32, String> {
    let mut req = ttrpc::Request::new();
    req.service = service.into();
    req.method = "Connect".into();
    req.timeout_nano = 10_000_000_000;
    req.payload = b"\x0a\x01x".to_vec(); // ConnectRequest { id: "x" }
    let resp = client
        .request(req)
        .await
        .map_err(|e| format!("{service}/Connect: {e}"))?;
    if resp.status.code() != ttrpc::Code::OK {
        return Err(format!("{service}/Connect: {:?}", resp.status));
    }
    // ConnectResponse { shim_pid = 1 (varint), ... }
    let mut s = CodedInputStream::from_bytes(&resp.payload);
    while let Some(tag) = s.read_raw_tag_or_eof().map_err(|e| e.to_string())? {
        if tag == 0x08 {
            return s.read_uint32().map_err(|e| e.to_string());
        }
        s.skip_field(protobuf::rt::WireType::new(tag & 7).ok_or("bad wire type")?)
            .map_err(|e| e.to_string())?;
    }
    Err(format!("{service}/Connect gave no shim pid"))
}

/// Connects to the shim at `address`, checks the task API `versions` answer on it, shuts it
/// down through the last, and waits for it to end with its socket gone.
fn serve_and_shut_down(address: &str, versions: &[&str]) -> Result<(), Failed> {
    let path = address
        .strip_prefix("unix://")
        .ok_or_else(|| format!("address {address:?} is not unix://"))?
        .to_owned();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let pid = rt.block_on(async {
        let client = ttrpc::asynchronous::Client::connect(&format!("unix://{path}"))
            .await
            .map_err(|e| format!("connecting to {path}: {e}"))?;
        let mut pid = 0;
        for v in versions {
            pid = connect(&client, &format!("containerd.task.{v}.Task")).await?;
        }
        let last = versions.last().ok_or("no version")?;
        let mut req = ttrpc::Request::new();
        req.service = format!("containerd.task.{last}.Task");
        req.method = "Shutdown".into();
        req.timeout_nano = 10_000_000_000;
        req.payload = b"\x0a\x01x".to_vec(); // ShutdownRequest { id: "x" }
        let resp = client.request(req).await.map_err(|e| e.to_string())?;
        if resp.status.code() != ttrpc::Code::OK {
            return Err(format!("Shutdown: {:?}", resp.status));
        }
        Ok::<u32, String>(pid)
    })?;
    let start = Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() || Path::new(&path).exists() {
        if start.elapsed() > Duration::from_secs(20) {
            return Err(
                format!("the shim (pid {pid}) or its socket {path} outlived Shutdown").into(),
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn bundle_dir() -> Result<tempfile::TempDir, Failed> {
    let dir = tempfile::Builder::new()
        .prefix("hako-start-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    std::fs::write(dir.path().join("config.json"), "{}").map_err(|e| e.to_string())?;
    // containerd's log pipe in the bundle, which the shim writes its log to.
    nix::unistd::mkfifo(
        &dir.path().join("log"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .map_err(|e| format!("mkfifo: {e}"))?;
    Ok(dir)
}

/// Holds the log pipe's read end open (as containerd does) for as long as it lives.
fn read_log(dir: &Path) -> Result<std::fs::File, Failed> {
    Ok(std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join("log"))
        .map_err(|e| e.to_string())?)
}

/// containerd 2.3: params in (nothing in the environment), protobuf result out naming a
/// socket in the params' directory; task API v3 and v2 both answer there.
pub fn containerd_2_3(id: &str) -> Result<(), Failed> {
    let dir = bundle_dir()?;
    // containerd's ttrpc socket, for the shim's event publisher.
    let ttrpc = dir.path().join("containerd.sock.ttrpc");
    let _containerd = UnixListener::bind(&ttrpc).map_err(|e| e.to_string())?;
    let _log = read_log(dir.path())?;
    let sockets = dir.path().join("s");
    let params = bootstrap_params(id, &ttrpc, &sockets);
    let o = start(dir.path(), id, &params, None)?;
    if !o.status.success() {
        return Err(format!("start: {}", String::from_utf8_lossy(&o.stderr)).into());
    }
    let (version, address, protocol) = bootstrap_result(&o.stdout)
        .map_err(|e| format!("{e}; stdout {:?}", String::from_utf8_lossy(&o.stdout)))?;
    let prefix = format!("unix://{}/", sockets.display());
    if version != 3 || protocol != "ttrpc" || !address.starts_with(&prefix) {
        return Err(format!("result {{{version}, {address:?}, {protocol:?}}}").into());
    }
    let written = std::fs::read_to_string(dir.path().join("address")).unwrap_or_default();
    if written != address {
        return Err(format!("the bundle's address file says {written:?}").into());
    }
    serve_and_shut_down(&address, &["v2", "v3"])
}

/// containerd 1.6–2.2: nothing (or runtime options) on stdin, TTRPC_ADDRESS in the
/// environment, the plain address out; task API v2 answers. Without either address `start`
/// fails saying so, and leaves no shim behind.
pub fn legacy(id: &str) -> Result<(), Failed> {
    let dir = bundle_dir()?;
    let ttrpc = dir.path().join("containerd.sock.ttrpc");
    let _containerd = UnixListener::bind(&ttrpc).map_err(|e| e.to_string())?;
    let _log = read_log(dir.path())?;
    // A runc-options Any, as containerd writes when a runtime has options.
    let any = b"\x0a\x1acontainerd.runc.v1.Options\x12\x02\x08\x01";
    let o = start(dir.path(), id, any, Some(&ttrpc))?;
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    if !o.status.success() || !text.starts_with("unix:///run/containerd/s/") || text.contains('\n')
    {
        return Err(format!(
            "start: {:?} stdout {text:?} stderr {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        )
        .into());
    }
    serve_and_shut_down(&text, &["v2"])?;

    let o = start(dir.path(), &format!("{id}-noaddr"), b"", None)?;
    let err = String::from_utf8_lossy(&o.stderr);
    if o.status.success() || !err.contains("TTRPC_ADDRESS") {
        return Err(format!("start without an address: {:?}: {err}", o.status).into());
    }
    let left = hako_tests::leaks::processes_naming(&format!("{id}-noaddr"));
    if !left.is_empty() {
        return Err(format!("a failed start left {left:?}").into());
    }
    Ok(())
}

//! Docker as a caller (private daemons: `hako_tests::docker`): Debian 12's docker.io 20.10
//! with `hako` registered in `daemon.json` as a runc-compatible runtime, and Debian sid's
//! docker.io 28 running Hako's shim (`--runtime io.containerd.hako.v2`) on containerd 2.x;
//! Docker's default overlay2 storage, and the same checks run with runc first (so each is known to hold for the
//! reference runtime): run with output and exit status, detached run, exec, logs, stop with
//! the process's trap, rm, and nothing of the sandbox left. Docker gives a runtime what broke
//! Hako before: a prestart hook (libnetwork's, even with `--network none`), a root file
//! system on an overlay it mounted outside the bundle, a state root of 30 bytes with
//! 64-character ids, and `--log-format json`.

use std::time::{Duration, Instant};

use hako_tests::docker::{BUSYBOX, Docker, Release};
use hako_tests::fixtures;
use hako_tests::require::{self, Skip};
use libtest_mimic::{Arguments, Failed};

fn text(o: &std::process::Output) -> String {
    format!(
        "exit {:?}, stdout {:?}, stderr {:?}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn run_stop_exec(docker: &Docker, runtime: &str) -> Result<(), Failed> {
    let began = Instant::now();
    let step = |what: &str| {
        eprintln!(
            "{runtime}: {what} at {:.1} s",
            began.elapsed().as_secs_f64()
        )
    };
    // `docker run --rm` of busybox with `runtime`, no network, `flags` and `command`.
    let run_rm = |flags: &[&str], command: &[&str]| {
        let mut args = vec!["run", "--rm", "--runtime", runtime, "--network", "none"];
        args.extend_from_slice(flags);
        args.push(BUSYBOX);
        args.extend_from_slice(command);
        docker.run(&args)
    };
    let o = run_rm(&[], &["sh", "-c", "echo out; echo err >&2; exit 5"])?;
    if o.status.code() != Some(5) || o.stdout != b"out\n" || o.stderr != b"err\n" {
        return Err(format!("{runtime}: docker run: {}", text(&o)).into());
    }
    step("run");
    // A terminal (-t: no client terminal is needed without -i).
    let o = run_rm(&["-t"], &["tty"])?;
    if !o.status.success() || !String::from_utf8_lossy(&o.stdout).contains("/dev/pts/") {
        return Err(format!("{runtime}: docker run -t: {}", text(&o)).into());
    }
    step("run -t");
    // A read-only root, a user, environment, working directory and a volume.
    let volume = docker.dir.path().join(format!("volume-{runtime}"));
    std::fs::create_dir_all(&volume).map_err(|e| e.to_string())?;
    std::fs::write(volume.join("f"), "from the host\n").map_err(|e| e.to_string())?;
    let mount = format!("{}:/data:ro", volume.display());
    let o = run_rm(
        &[
            "--read-only",
            "--user",
            "1000:1000",
            "--env",
            "HAKO_X=y",
            "--workdir",
            "/tmp",
            "--volume",
            &mount,
        ],
        &[
            "sh",
            "-c",
            "id -u; echo $HAKO_X; pwd; cat /data/f; touch /x 2>/dev/null && echo writable || echo read-only",
        ],
    )?;
    let want = "1000\ny\n/tmp\nfrom the host\nread-only\n";
    if !o.status.success() || String::from_utf8_lossy(&o.stdout) != want {
        return Err(format!(
            "{runtime}: docker run --read-only --user --env --workdir --volume: {}",
            text(&o)
        )
        .into());
    }
    step("read-only run");
    let name = format!("c-{runtime}");
    let o = docker.run(&[
        "run",
        "-d",
        "--name",
        &name,
        "--runtime",
        runtime,
        "--network",
        "none",
        BUSYBOX,
        "sh",
        "-c",
        "echo started; trap 'echo term; exit 7' TERM; while true; do sleep 1; done",
    ])?;
    if !o.status.success() {
        return Err(format!("{runtime}: docker run -d: {}", text(&o)).into());
    }
    let checked = (|| -> Result<(), Failed> {
        let start = Instant::now();
        while !docker.run(&["logs", &name])?.stdout.starts_with(b"started") {
            if start.elapsed() > hako_tests::boot::vm_deadline() {
                return Err(format!("{runtime}: the container never said it started").into());
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        let o = docker.run(&["exec", &name, "sh", "-c", "echo exec-out; exit 3"])?;
        if o.status.code() != Some(3) || o.stdout != b"exec-out\n" {
            return Err(format!("{runtime}: docker exec: {}", text(&o)).into());
        }
        step("exec");
        // cp into the running container reaches its files, not the host's.
        let src = docker.dir.path().join("copied-in");
        std::fs::write(&src, "copied in\n").map_err(|e| e.to_string())?;
        let target = format!("/hako-copied-{runtime}");
        let o = docker.run(&[
            "cp",
            &src.display().to_string(),
            &format!("{name}:{target}"),
        ])?;
        if std::path::Path::new(&target).exists() {
            let _ = std::fs::remove_file(&target);
            return Err(format!("{runtime}: docker cp wrote the host's {target}").into());
        }
        let read = docker.run(&["exec", &name, "cat", &target])?;
        if !o.status.success() || read.stdout != b"copied in\n" {
            return Err(format!("{runtime}: docker cp: {} / {}", text(&o), text(&read)).into());
        }
        // top never lists host processes as the container's.
        let o = docker.run(&["top", &name])?;
        let listed = String::from_utf8_lossy(&o.stdout);
        if listed.contains("dockerd") || listed.contains("containerd") {
            return Err(format!("{runtime}: docker top lists host processes: {}", text(&o)).into());
        }
        for (verb, state) in [("pause", "paused"), ("unpause", "running")] {
            let o = docker.run(&[verb, &name])?;
            let s = docker.run(&["inspect", "-f", "{{.State.Status}}", &name])?;
            if !o.status.success() || String::from_utf8_lossy(&s.stdout).trim() != state {
                return Err(
                    format!("{runtime}: docker {verb}: {} / {}", text(&o), text(&s)).into(),
                );
            }
        }
        step("cp, top, pause");
        let o = docker.run(&["stop", "-t", "120", &name])?;
        if !o.status.success() {
            return Err(format!("{runtime}: docker stop: {}", text(&o)).into());
        }
        step("stop");
        let o = docker.run(&["inspect", "-f", "{{.State.ExitCode}}", &name])?;
        if String::from_utf8_lossy(&o.stdout).trim() != "7" {
            return Err(format!("{runtime}: exit code after stop: {}", text(&o)).into());
        }
        // The same container again (a new task under the same id), then killed.
        let o = docker.run(&["start", &name])?;
        if !o.status.success() {
            return Err(format!("{runtime}: docker start after stop: {}", text(&o)).into());
        }
        let start = Instant::now();
        while docker.run(&["logs", &name])?.stdout != b"started\nterm\nstarted\n" {
            if start.elapsed() > hako_tests::boot::vm_deadline() {
                return Err(
                    format!("{runtime}: the restarted container never said it started").into(),
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        let o = docker.run(&["kill", &name])?;
        if !o.status.success() {
            return Err(format!("{runtime}: docker kill: {}", text(&o)).into());
        }
        step("start again, kill");
        let start = Instant::now();
        loop {
            let o = docker.run(&[
                "inspect",
                "-f",
                "{{.State.Status}} {{.State.ExitCode}}",
                &name,
            ])?;
            let state = String::from_utf8_lossy(&o.stdout).trim().to_owned();
            if state == "exited 137" {
                break;
            }
            if start.elapsed() > Duration::from_secs(60) {
                return Err(format!("{runtime}: after kill the container is {state:?}").into());
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        let o = docker.run(&["logs", &name])?;
        if o.stdout != b"started\nterm\nstarted\n" {
            return Err(format!("{runtime}: docker logs: {}", text(&o)).into());
        }
        Ok(())
    })();
    step("logs");
    let removed = docker.run(&["rm", "-f", &name])?;
    step("rm");
    checked?;
    if !removed.status.success() {
        return Err(format!("{runtime}: docker rm: {}", text(&removed)).into());
    }
    Ok(())
}

/// No monitor or hako-vmm of this daemon's containers is left (given their teardown).
fn nothing_of_hako_left(docker: &Docker) -> Result<(), Failed> {
    let start = Instant::now();
    loop {
        let left: Vec<String> = docker
            .leftover_processes()
            .into_iter()
            // Hako's own: monitors (`hako ... monitor --bundle`) and VMMs.
            .filter(|(_, c)| {
                c.contains(" monitor --bundle ")
                    || c.contains(" stand-in ")
                    || c.contains("hako-vmm")
                    || c.contains("containerd-shim-hako-v2")
            })
            .map(|(pid, c)| format!("{pid}: {c}"))
            .collect();
        if left.is_empty() {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(60) {
            return Err(format!("left behind: {left:?}").into());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn docker_matches_runc(release: Release, runtimes: [&str; 2]) -> Result<(), Failed> {
    let docker = Docker::start(release)?;
    let result = runtimes
        .into_iter()
        .try_for_each(|rt| run_stop_exec(&docker, rt))
        .and_then(|()| nothing_of_hako_left(&docker));
    if result.is_err() {
        eprintln!("dockerd log (last lines):\n{}", docker.log_tail(40));
    }
    result
}

fn prerequisites() -> Result<(), Skip> {
    require::root()?;
    require::kvm()?;
    require::program("containerd")?;
    require::program("runc")?;
    require::program("tar")?;
    require::program("/bin/busybox")?;
    fixtures::kernel().map(drop)
}

fn main() {
    let args = Arguments::from_args();
    let trials = vec![
        require::trial(
            "docker20_run_exec_logs_stop_match_runc",
            || prerequisites().and_then(|()| Release::Docker20.available()),
            || docker_matches_runc(Release::Docker20, ["runc", "hako"]),
        ),
        require::trial(
            "docker28_shim_run_exec_logs_stop_match_runc",
            || prerequisites().and_then(|()| Release::Docker28.available()),
            || docker_matches_runc(Release::Docker28, ["runc", "io.containerd.hako.v2"]),
        ),
    ];
    libtest_mimic::run(&args, trials).exit()
}

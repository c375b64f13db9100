//! `hako-bench-net [CONNECTS] [MIB]` (defaults 20 and 16): TCP between the pod network's
//! bridge side and a pod, through Hako (the guest's virtio-net, a tap and tc redirects to the
//! CNI veth) and through runc (the veth itself), side by side in one run on one CNI bridge
//! network (containerd in a network namespace of the bench's own, Debian's bridge and
//! host-local plugins, MTU 1500). Per runtime: connect latency (CONNECTS connects to a
//! listener in the pod, p50/p95), throughput bridge -> pod (MIB MiB written to `nc -l` in the
//! pod, until the pod's side closes) and pod -> bridge (`dd | nc` in the pod, first byte to
//! end of stream). Prints each and the hako/runc ratios. Never asserts. Needs root, KVM,
//! containerd, runc, the CNI plugins and busybox-static.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use hako_bench::percentile;
use hako_tests::cni::CniContainerd;
use hako_tests::containerd::{BUSYBOX, Release};
use hako_tests::cri::Cri;

struct Figures {
    connect_ms: Vec<f64>,
    to_pod_mib_s: f64,
    from_pod_mib_s: f64,
}

/// Retries `f` for up to two minutes (the pod's servers may still be starting).
fn retry<T>(mut f: impl FnMut() -> Result<T, String>) -> Result<T> {
    let start = Instant::now();
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if start.elapsed() > Duration::from_secs(120) => return Err(anyhow!(e)),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

async fn measure(
    cri: &mut Cri,
    net: &CniContainerd,
    handler: &str,
    connects: usize,
    mib: usize,
) -> Result<Figures> {
    let config = cri.pod_config_with_network(&format!("bench-{handler}"));
    let pod = cri
        .run_pod(&config, handler)
        .await
        .map_err(anyhow::Error::msg)?;
    let figures = async {
        let id = cri
            .start_container(
                &pod,
                &config,
                "servers",
                BUSYBOX,
                &[
                    "sh",
                    "-c",
                    // nc's stdin never ends (an end would half-close the connection), so
                    // it closes only after reading everything the bridge side sent.
                    "busybox httpd -p 8080 -h / && \
                     busybox sleep 100000 | busybox nc -l -p 9000 >/dev/null; \
                     busybox sleep 100000",
                ],
            )
            .await
            .map_err(anyhow::Error::msg)?;
        let ip = cri.pod_ip(&pod).await.map_err(anyhow::Error::msg)?;
        let ns = &net.ns;
        // Connect latency: the handshake with the pod's kernel (the server accepts later).
        retry(|| ns.connect(&format!("{ip}:8080")).map(drop))?;
        let mut connect_ms = Vec::new();
        for _ in 0..connects {
            let start = Instant::now();
            let s = ns.connect(&format!("{ip}:8080")).map_err(|e| anyhow!(e))?;
            connect_ms.push(start.elapsed().as_secs_f64() * 1e3);
            drop(s);
            std::thread::sleep(Duration::from_millis(100));
        }
        // Bridge -> pod: until the pod's nc has read everything and closed.
        let mut s = retry(|| ns.connect(&format!("{ip}:9000")))?;
        let chunk = vec![0x5au8; 64 * 1024];
        let start = Instant::now();
        for _ in 0..mib * 16 {
            s.write_all(&chunk).context("sending to the pod")?;
        }
        s.shutdown(Shutdown::Write).ok();
        s.set_read_timeout(Some(Duration::from_secs(600)))?;
        let _ = s.read(&mut [0u8; 16]);
        let to_pod = mib as f64 / start.elapsed().as_secs_f64();
        // Pod -> bridge: first byte to end of stream.
        let listener = ns
            .listen(&format!("{}:9100", net.gateway))
            .map_err(|e| anyhow!(e))?;
        let reader = std::thread::spawn(move || -> Result<(usize, f64)> {
            let (mut s, _) = listener.accept()?;
            let mut buf = vec![0u8; 256 * 1024];
            let n = s.read(&mut buf)?;
            let start = Instant::now();
            let mut total = n;
            loop {
                match s.read(&mut buf)? {
                    0 => break,
                    n => total += n,
                }
            }
            Ok((total, start.elapsed().as_secs_f64()))
        });
        let send = format!(
            "busybox dd if=/dev/zero bs=65536 count={} 2>/dev/null | busybox nc {} 9100",
            mib * 16,
            net.gateway
        );
        cri.exec_sync(&id, &["sh", "-c", &send])
            .await
            .map_err(anyhow::Error::msg)?;
        let (bytes, secs) = reader
            .join()
            .map_err(|_| anyhow!("the reader thread panicked"))??;
        Ok::<_, anyhow::Error>(Figures {
            connect_ms,
            to_pod_mib_s: to_pod,
            from_pod_mib_s: bytes as f64 / (1024.0 * 1024.0) / secs.max(1e-9),
        })
    }
    .await;
    cri.stop_and_remove_pod(&pod)
        .await
        .map_err(anyhow::Error::msg)?;
    figures
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let connects: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(20);
    let mib: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(16);
    let net = CniContainerd::start(Release::Debian12, "hako-benchnet", "10.99.3", 1500)
        .map_err(anyhow::Error::msg)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (runc, hako) = rt.block_on(async {
        let ctd = &net.containerd;
        let mut cri = Cri::connect(&ctd.socket, ctd.dir.path())
            .await
            .map_err(anyhow::Error::msg)?;
        let runc = measure(&mut cri, &net, "runc", connects, mib).await?;
        let hako = measure(&mut cri, &net, "hako", connects, mib).await?;
        Ok::<_, anyhow::Error>((runc, hako))
    })?;
    println!(
        "TCP, the pod network's bridge side <-> a pod ({connects} connects, {mib} MiB each way)"
    );
    println!(
        "{:<8} {:>14} {:>14} {:>18} {:>18}",
        "runtime", "connect p50", "connect p95", "bridge->pod MiB/s", "pod->bridge MiB/s"
    );
    for (name, f) in [("runc", &runc), ("hako", &hako)] {
        println!(
            "{:<8} {:>11.2} ms {:>11.2} ms {:>18.3} {:>18.3}",
            name,
            percentile(&f.connect_ms, 0.5),
            percentile(&f.connect_ms, 0.95),
            f.to_pod_mib_s,
            f.from_pod_mib_s
        );
    }
    println!(
        "hako/runc: connect p50 {:.1}x, bridge->pod throughput {:.5}x, pod->bridge {:.5}x",
        percentile(&hako.connect_ms, 0.5) / percentile(&runc.connect_ms, 0.5),
        hako.to_pod_mib_s / runc.to_pod_mib_s,
        hako.from_pod_mib_s / runc.from_pod_mib_s
    );
    Ok(())
}

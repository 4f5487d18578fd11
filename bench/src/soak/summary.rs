//! What a soak leaves behind: `soak.csv` (one row per tick), `rss.png` (goim-rs's processes),
//! `rss-services.png` (Redis, Kafka), `connections.png`, `pushes.png`, `delivered.png`, and
//! `summary.md` with the figures it also prints.

use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

use super::Plan;
use super::pusher::{KINDS, Sent};
use super::worker::Report;
use crate::report::plot::{self, Chart, Series};

/// One tick's figures.
pub struct Sample {
    pub secs: f64,
    pub connected: u64,
    /// Pushes per second accepted by the API: room, user, broadcast.
    pub pushes: [f64; 3],
    pub delivered: f64,
    pub unexpected: u64,
    /// Per process, in the order of the run's process list; NaN once a process is gone.
    pub rss_mb: Vec<f64>,
}

impl Sample {
    pub fn line(&self, t: &Report) -> String {
        let lost: u64 = t.kinds.iter().map(|c| c.lost).sum();
        let rss: Vec<String> = self.rss_mb.iter().map(|r| format!("{r:.0}")).collect();
        format!(
            "{:>5.0}s connected {} pushes/s {:.0}/{:.0}/{:.0} delivered/s {:.0} lost {lost} unexpected {} slow {} reconnects {} rss MB [{}]",
            self.secs,
            self.connected,
            self.pushes[0],
            self.pushes[1],
            self.pushes[2],
            self.delivered,
            t.unexpected,
            t.slow_disconnects,
            t.reconnects,
            rss.join(" ")
        )
    }
}

pub struct Csv(std::io::BufWriter<std::fs::File>);

impl Csv {
    pub fn create(dir: &Path, processes: &[(String, u32)]) -> Result<Csv> {
        let path = dir.join("soak.csv");
        let f = std::fs::File::create(&path).with_context(|| format!("cannot write {}", path.display()))?;
        let mut w = std::io::BufWriter::new(f);
        write!(
            w,
            "elapsed_s,connected,room_pushes_per_s,user_pushes_per_s,broadcast_pushes_per_s,delivered_per_s,unexpected_disconnects"
        )?;
        for (name, _) in processes {
            write!(w, ",rss_mb_{name}")?;
        }
        writeln!(w)?;
        w.flush()?;
        Ok(Csv(w))
    }

    pub fn write(&mut self, s: &Sample) -> Result<()> {
        write!(
            self.0,
            "{:.1},{},{:.2},{:.2},{:.2},{:.1},{}",
            s.secs, s.connected, s.pushes[0], s.pushes[1], s.pushes[2], s.delivered, s.unexpected
        )?;
        for r in &s.rss_mb {
            write!(self.0, ",{r:.1}")?;
        }
        writeln!(self.0)?;
        self.0.flush()?;
        Ok(())
    }
}

pub struct Summary {
    pub text: String,
}

impl Summary {
    #[expect(clippy::too_many_arguments, reason = "one call site; the parts of one run")]
    pub fn new(
        plan: &Plan,
        processes: &[(String, u32)],
        samples: &[Sample],
        end_rss: Vec<f64>,
        fin: &Report,
        sent: &Sent,
        connect_secs: f64,
        workers: usize,
    ) -> Summary {
        let mut t = String::new();
        let run_secs = samples.last().map(|s| s.secs).unwrap_or(0.0);
        let ws = (0..plan.connections)
            .filter(|i| {
                let per = *i / plan.comets as u64;
                plan.ws_every > 0 && per % plan.ws_every == plan.ws_every - 1
            })
            .count() as u64;
        let _ = writeln!(t, "# goim-rs soak\n");
        let _ = writeln!(
            t,
            "- duration: {}m{:02}s of traffic (after {connect_secs:.0} s to connect everyone)",
            run_secs as u64 / 60,
            run_secs as u64 % 60
        );
        let _ = writeln!(
            t,
            "- connections: {} ({} TCP, {ws} WebSocket) over {} goim-comet, {} rooms, {workers} worker processes; \
             distributed mode: goim-logic (Redis store, Kafka queue), goim-job",
            plan.connections,
            plan.connections - ws,
            plan.comets,
            plan.rooms
        );
        let _ = writeln!(
            t,
            "- offered: room {}/s, user {}/s, broadcast {}/s; churn {:.1}% of clients/min; {} slow clients/min paused {:?}",
            plan.room_rate,
            plan.user_rate,
            plan.broadcast_rate,
            plan.churn * 100.0,
            plan.slow_per_min,
            plan.pause
        );
        let _ = writeln!(
            t,
            "\n| stream | pushes sent | push errors | delivered | lost (gaps) | lost (tail) | duplicates | reordered |"
        );
        let _ = writeln!(t, "|---|---:|---:|---:|---:|---:|---:|---:|");
        for (k, (_, name)) in KINDS.iter().enumerate() {
            let c = &fin.kinds[k];
            let _ = writeln!(
                t,
                "| {name} | {} | {} | {} | {} | {} | {} | {} |",
                sent.ok[k], sent.failed[k], c.delivered, c.lost, fin.tail_lost[k], c.duplicates, c.reordered
            );
        }
        let lost: u64 = fin.kinds.iter().map(|c| c.lost).sum::<u64>() + fin.tail_lost.iter().sum::<u64>();
        let dups: u64 = fin.kinds.iter().map(|c| c.duplicates).sum();
        let _ = writeln!(t, "\n- lost numbered pushes: {lost}; duplicates: {dups}");
        let _ = writeln!(t, "- unexpected disconnects: {}", fin.unexpected);
        let _ = writeln!(
            t,
            "- slow disconnects (expected): {} of {} pauses ({} paused clients kept by the server; {} gaps seen by \
             slow clients before their disconnect, not counted as lost; {} filler pushes sent)",
            fin.slow_disconnects, fin.pauses, fin.slow_kept, fin.slow_window_lost, sent.fillers
        );
        let _ = writeln!(t, "- reconnects (client-initiated churn): {}", fin.reconnects);
        let _ = writeln!(t, "- connects: {}; connect failures: {}", fin.connects, fin.connect_failures);
        if let Some(e) = &sent.last_error {
            let _ = writeln!(t, "- last push error: {e}");
        }
        if !fin.errors.is_empty() {
            let _ = writeln!(t, "- client-side errors and disconnect reasons:");
            for (e, n) in &fin.errors {
                let _ = writeln!(t, "  - {n}× {e}");
            }
        }
        // Warm-up: the first sample after 10% of the run.
        let warm = samples.iter().find(|s| s.secs >= run_secs * 0.1).or(samples.first());
        let _ = writeln!(
            t,
            "\n| process | RSS at warm-up ({:.0} s), MB | RSS at the end, MB | end / warm-up |",
            warm.map(|s| s.secs).unwrap_or(0.0)
        );
        let _ = writeln!(t, "|---|---:|---:|---:|");
        for (i, (name, _)) in processes.iter().enumerate() {
            let w = warm.and_then(|s| s.rss_mb.get(i).copied()).unwrap_or(f64::NAN);
            let e = end_rss.get(i).copied().unwrap_or(f64::NAN);
            let _ = writeln!(t, "| {name} | {w:.1} | {e:.1} | {:.3} |", e / w);
        }
        let _ = writeln!(
            t,
            "\nNotes: a client's expected numbers restart at every (re)connect, from the first number it \
             receives: pushes sent while it was away are not counted as lost, since resuming a session \
             (#12) is not implemented yet; a loss before the first delivery after a connect is not seen. \
             \"Lost (tail)\" is, for clients connected and reading at the end, the numbers sent after the \
             last one they received ({} s after the last push). A server-side end while a client was not \
             reading, or within {} s after it resumed, is an expected slow disconnect; every other end \
             the client did not ask for is unexpected.",
            super::DRAIN.as_secs(),
            super::SLOW_GRACE.as_secs()
        );
        Summary { text: t }
    }

    /// Writes summary.md and the plots into `dir`; lists the plots in the summary.
    pub fn write(&self, dir: &Path, samples: &[Sample], processes: &[(String, u32)]) -> Result<()> {
        let mut text = self.text.clone();
        let written = plots(dir, samples, processes);
        if !written.is_empty() {
            text.push('\n');
            for f in &written {
                let _ = writeln!(text, "![{f}]({f})");
            }
        }
        let _ = writeln!(text, "\nData: soak.csv (one row per {} s).", super::TICK.as_secs());
        let path = dir.join("summary.md");
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
    }
}

fn plots(dir: &Path, samples: &[Sample], processes: &[(String, u32)]) -> Vec<String> {
    if !plot::font_ready() {
        eprintln!("plots skipped: cannot read the font {}", plot::FONT);
        return Vec::new();
    }
    let minutes = |s: &Sample| s.secs / 60.0;
    let series = |name: &str, f: &dyn Fn(&Sample) -> f64| Series {
        name: name.to_string(),
        points: samples.iter().map(|s| (minutes(s), f(s))).filter(|p| p.1.is_finite()).collect(),
    };
    // goim-rs's own processes apart from Redis and Kafka: Kafka's JVM, ten times their size,
    // would flatten them to one line at the bottom of a shared chart.
    let rss = |ours: bool| -> Vec<Series> {
        let named = processes.iter().enumerate().filter(|(_, (name, _))| name.starts_with("goim") == ours);
        named.map(|(i, (name, _))| series(name, &|s| s.rss_mb[i])).collect()
    };
    let charts = [
        (
            Chart {
                file: "rss.png",
                title: "RSS of each goim-rs process",
                x: "minutes",
                y: "RSS (MB)",
                log_x: false,
                log_y: false,
            },
            rss(true),
        ),
        (
            Chart {
                file: "rss-services.png",
                title: "RSS of Redis and Kafka",
                x: "minutes",
                y: "RSS (MB)",
                log_x: false,
                log_y: false,
            },
            rss(false),
        ),
        (
            Chart {
                file: "connections.png",
                title: "Connected clients",
                x: "minutes",
                y: "connections",
                log_x: false,
                log_y: false,
            },
            vec![series("connected", &|s| s.connected as f64)],
        ),
        (
            Chart {
                file: "pushes.png",
                title: "Numbered pushes per second",
                x: "minutes",
                y: "pushes/s",
                log_x: false,
                log_y: false,
            },
            KINDS.iter().enumerate().map(|(k, (_, name))| series(name, &|s| s.pushes[k])).collect(),
        ),
        (
            Chart {
                file: "delivered.png",
                title: "Numbered messages delivered per second",
                x: "minutes",
                y: "messages/s",
                log_x: false,
                log_y: false,
            },
            vec![series("delivered", &|s| s.delivered)],
        ),
    ];
    let mut written = Vec::new();
    for (chart, series) in charts {
        match plot::draw(&dir.join(chart.file), &chart, &series) {
            Ok(()) => written.push(chart.file.to_string()),
            Err(e) => eprintln!("plot {} failed: {e:#}", chart.file),
        }
    }
    written
}

/// Draws the plots of a finished soak again from its `soak.csv` (after a change to the plots;
/// `goim-bench soak --replot --out DIR`). Returns the files written.
pub fn replot(dir: &Path) -> Result<Vec<String>> {
    let path = dir.join("soak.csv");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().context("soak.csv is empty")?.split(',').collect();
    let processes: Vec<(String, u32)> =
        header.iter().filter_map(|h| h.strip_prefix("rss_mb_")).map(|name| (name.to_string(), 0)).collect();
    let mut samples = Vec::new();
    for (n, line) in lines.enumerate() {
        let f: Vec<f64> = line.split(',').map(|v| v.parse().unwrap_or(f64::NAN)).collect();
        anyhow::ensure!(
            f.len() == header.len(),
            "soak.csv line {}: {} fields, not {}",
            n + 2,
            f.len(),
            header.len()
        );
        samples.push(Sample {
            secs: f[0],
            connected: f[1] as u64,
            pushes: [f[2], f[3], f[4]],
            delivered: f[5],
            unexpected: f[6] as u64,
            rss_mb: f[7..].to_vec(),
        });
    }
    Ok(plots(dir, &samples, &processes))
}

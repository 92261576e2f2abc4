//! The Markdown report of a run.

use std::fmt::Write as _;

use super::analysis::RunResult;

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "–".to_owned(), |x| x.to_string())
}

/// Renders `report.md`; `plots` are the SVG file names written beside it.
pub fn markdown(r: &RunResult, plots: &[String]) -> String {
    let mut s = String::new();
    let c = &r.counts;
    let _ = writeln!(s, "# Crowd run: {}\n", r.scenario);
    if !r.description.is_empty() {
        let _ = writeln!(s, "{}\n", r.description.trim());
    }
    let _ = writeln!(
        s,
        "Started {} · ran {:.1} s · stopped: **{}** · `{}`\n",
        r.started_at, r.duration_s, r.stopped_by, r.command
    );
    let _ = writeln!(
        s,
        "Room `{}` on {} (admin: {}).",
        r.room,
        r.targets.join(", "),
        if r.admin.is_empty() {
            "none".to_owned()
        } else {
            r.admin.join(", ")
        }
    );
    if let Some(sp) = &r.spawned {
        let _ = writeln!(s, "Spawned for this run: {sp}.");
    }
    let _ = writeln!(
        s,
        "\nThe simulator, the proxy and the shop share this machine's cores: compare figures \
         within a run, not across machines.\n"
    );

    let _ = writeln!(
        s,
        "## Checks: {}\n",
        if r.passed { "all passed" } else { "FAILED" }
    );
    if r.checks.is_empty() {
        let _ = writeln!(s, "No checks were asked for.\n");
    } else {
        let _ = writeln!(s, "| check | result | detail |\n|---|---|---|");
        for k in &r.checks {
            let _ = writeln!(
                s,
                "| {} | {} | {} |",
                k.name,
                if k.passed { "pass" } else { "**FAIL**" },
                k.detail
            );
        }
        s.push('\n');
    }

    let _ = writeln!(s, "## Shoppers\n");
    let _ = writeln!(s, "| | count |\n|---|---:|");
    let rows: [(&str, String); 19] = [
        ("arrived (planned)", r.arrivals_planned.to_string()),
        ("arrived", c.arrived.to_string()),
        ("humans", c.humans.to_string()),
        ("bots", c.bots.to_string()),
        ("admitted", c.admitted.to_string()),
        ("admitted humans", c.admitted_humans.to_string()),
        (
            "admitted without waiting",
            c.admitted_without_wait.to_string(),
        ),
        ("waited in line", c.waited.to_string()),
        ("gave up (stopped polling or left)", c.gave_up.to_string()),
        ("left the line explicitly", c.left_queue.to_string()),
        (
            "persistent shoppers not admitted",
            c.persistent_not_admitted.to_string(),
        ),
        (
            "still waiting when the run stopped",
            c.stopped_waiting.to_string(),
        ),
        (
            "sold out / closed / challenged",
            format!("{} / {} / {}", c.sold_out, c.closed, c.challenged),
        ),
        ("ended by errors", c.errors.to_string()),
        (
            "entries refused at the turn (minute or room full)",
            c.claims_refused.to_string(),
        ),
        ("pages browsed", c.pages.to_string()),
        ("carts / orders", format!("{} / {}", c.carts, c.orders)),
        ("sessions ended (leave)", c.sessions_ended.to_string()),
        ("requests sent", r.requests.to_string()),
    ];
    for (k, v) in rows {
        let _ = writeln!(s, "| {k} | {v} |");
    }

    let rt = &r.rate;
    let _ = writeln!(s, "\n## Admission\n");
    let _ = writeln!(s, "| | value |\n|---|---:|");
    let _ = writeln!(
        s,
        "| target rate (per minute) | {} |",
        opt(rt.target_per_minute)
    );
    let _ = writeln!(
        s,
        "| measured while the line was long | {} |",
        match (rt.measured_per_minute, rt.measured_from_s, rt.measured_to_s) {
            (Some(m), Some(a), Some(b)) => format!("{m:.1}/min ({a}–{b} s)"),
            _ => "not measurable (line too short)".to_owned(),
        }
    );
    if rt.cap_limited_s > 0 {
        let _ = writeln!(
            s,
            "| seconds when the cap, not the rate, held admissions back | {} |",
            rt.cap_limited_s
        );
    }
    let _ = writeln!(
        s,
        "| busiest server minute | {} entries |",
        opt(rt.per_minute.values().max())
    );
    let _ = writeln!(
        s,
        "| most entries in {} s | {} (bound {}) |",
        rt.window_s,
        rt.max_in_window,
        opt(rt.window_bound)
    );
    let _ = writeln!(
        s,
        "| highest no-show ratio (admin) | {:.3} |",
        rt.max_noshow_ratio
    );
    let _ = writeln!(
        s,
        "| max active / cap (admin) | {} / {} ({} samples, {} above the cap) |",
        opt(r.cap.max_active),
        opt(r.cap.cap),
        r.cap.samples,
        r.cap.violations
    );
    if !rt.per_minute.is_empty() {
        let _ = writeln!(s, "\nEntries per server minute (from the passes):\n");
        let _ = writeln!(s, "| UTC minute | entries |\n|---|---:|");
        for (m, n) in &rt.per_minute {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::from(*m) * 60);
            let _ = writeln!(s, "| {} | {n} |", humantime::format_rfc3339_seconds(t));
        }
    }

    let w = &r.wait_s;
    let _ = writeln!(s, "\n## Waiting\n");
    let _ = writeln!(
        s,
        "Wait from arrival to entry, shoppers who waited ({}): mean {:.1} s, p50 {:.1} s, p90 \
         {:.1} s, p99 {:.1} s, max {:.1} s.",
        w.count, w.mean, w.p50, w.p90, w.p99, w.max
    );
    if r.eta.compared > 0 {
        let _ = writeln!(
            s,
            "\nETA: for {} shoppers the first band shown while the line moved held their real \
             remaining wait in {:.1} % of cases (± one poll interval); real / estimated \
             midpoint, median: {:.2}.",
            r.eta.compared,
            r.eta.in_band * 100.0,
            r.eta.median_ratio
        );
    }
    let f = &r.fifo;
    let _ = writeln!(s, "\n## Order\n");
    let _ = writeln!(
        s,
        "Method `{}`. {} admitted shoppers with a known place in the order; **{} FIFO \
         inversions** (a shopper admitted more than one of its poll intervals + the view \
         tolerance after someone behind it){}.",
        f.method,
        f.checked,
        f.inversions,
        if f.applies {
            ""
        } else {
            " — not checked for this method"
        }
    );
    if !f.examples.is_empty() {
        let _ = writeln!(
            s,
            "\n| place | entered (s) | later place | it entered (s) | lag (s) |\n|---:|---:|---:|---:|---:|"
        );
        for x in &f.examples {
            let _ = writeln!(
                s,
                "| {} | {:.1} | {} | {:.1} | {:.1} |",
                x.order, x.admitted_s, x.later_order, x.later_admitted_s, x.lag_s
            );
        }
    }

    if r.bots.bots > 0 {
        let b = &r.bots;
        let _ = writeln!(s, "\n## Bots\n");
        let _ = writeln!(
            s,
            "| | value |\n|---|---:|\n| bots | {} |\n| admitted with their own ticket | {} |\n\
             | status polls | {} |\n| pages served with a shared pass | {} |\n\
             | shared-pass pages refused | {} |\n| challenged | {} |\n\
             | median wait, bots / humans (s) | {} / {} |",
            b.bots,
            b.admitted,
            b.polls,
            b.replay_ok,
            b.replay_refused,
            b.challenged,
            b.median_wait_bots_s,
            b.median_wait_humans_s
        );
    }

    let _ = writeln!(s, "\n## Latency\n");
    let _ = writeln!(
        s,
        "From the simulator: request sent to response read, per endpoint (ms).\n\n\
         | endpoint | requests | p50 | p90 | p99 | p99.9 | max |\n|---|---:|---:|---:|---:|---:|---:|"
    );
    for l in r.latency.iter().chain(std::iter::once(&r.client_queue)) {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            l.endpoint, l.count, l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
        );
    }
    let _ = writeln!(
        s,
        "\n`client_queue` is the time a request waited for one of the simulator's own connection \
         slots before it was sent; when it grows, the simulator is the bottleneck."
    );

    let _ = writeln!(s, "\n## Errors and status codes\n");
    if r.errors.is_empty() {
        let _ = writeln!(s, "No failed requests.");
    } else {
        let _ = writeln!(s, "| error | count |\n|---|---:|");
        for (k, v) in &r.errors {
            let _ = writeln!(s, "| {k} | {v} |");
        }
    }
    let _ = writeln!(s, "\n| endpoint status | count |\n|---|---:|");
    for (k, v) in &r.statuses {
        let _ = writeln!(s, "| {k} | {v} |");
    }

    if let Some(rd) = &r.redis {
        let _ = writeln!(s, "\n## Redis\n");
        let _ = writeln!(
            s,
            "{} script calls (round trips) during the run, background refreshes included: \
             {:.3} per arrival, {:.4} per request; used_memory {} bytes at the end. Commands \
             run inside the scripts, from `INFO commandstats`:\n\n| command | calls |\n|---|---:|",
            rd.calls, rd.per_arrival, rd.per_request, rd.used_memory_bytes
        );
        for (k, v) in &rd.by_command {
            let _ = writeln!(s, "| {k} | {v} |");
        }
    }

    if !plots.is_empty() {
        let _ = writeln!(s, "\n## Plots\n");
        for p in plots {
            let _ = writeln!(s, "![{p}]({p})\n");
        }
    }
    let _ = writeln!(
        s,
        "Full data: `result.json` (per-second series, admin samples, every figure above)."
    );
    s
}

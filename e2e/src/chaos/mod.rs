//! Chaos: a mixed workload under random faults, a recorder that keeps a history from every side,
//! and a checker that proves the invariants of issue 15 on it (docs/reliability.md).

pub mod check;
pub mod history;
pub mod recorder;
pub mod run;

pub use check::{Report, check};
pub use history::History;

use std::time::Duration;

/// Where `gpufed-bench chaos --table` writes in docs/reliability.md.
pub const TABLE_BEGIN: &str = "<!-- chaos-run:begin -->";
/// End of that section.
pub const TABLE_END: &str = "<!-- chaos-run:end -->";

/// The section a run writes into docs/reliability.md: profile, seed, length, what happened, and the
/// checker's table.
pub fn run_section(h: &History, r: &Report, took: Duration) -> String {
    let count = |kind: &str| {
        h.events
            .iter()
            .filter(|e| match e {
                history::Event::Fault { healed, .. } => !healed && kind == "fault",
                history::Event::JobAccepted { .. } => kind == "job",
                history::Event::AttemptRun { .. } => kind == "pod",
                history::Event::Chain(_) => kind == "chain",
                _ => false,
            })
            .count()
    };
    let mut faults: std::collections::BTreeMap<&str, usize> = Default::default();
    for e in &h.events {
        if let history::Event::Fault {
            fault,
            healed: false,
            ..
        } = e
        {
            *faults.entry(fault.as_str()).or_default() += 1;
        }
    }
    let faults: Vec<String> = faults.iter().map(|(f, n)| format!("{f} ×{n}")).collect();
    format!(
        "Profile `{}`, seed `{}`, {:.0} min in all (start-up and quiescence included): {} jobs, {} pods, \
         {} faults ({}), {} escrow events.\n\n{}",
        h.profile,
        h.seed,
        took.as_secs_f64() / 60.0,
        count("job"),
        count("pod"),
        count("fault"),
        faults.join(", "),
        count("chain"),
        r
    )
}

/// `doc` with the text between [`TABLE_BEGIN`] and [`TABLE_END`] replaced by `section`.
pub fn replace_run_table(doc: &str, section: &str) -> Result<String, crate::Error> {
    let (Some(b), Some(e)) = (doc.find(TABLE_BEGIN), doc.find(TABLE_END)) else {
        return Err(crate::Error::Other(format!(
            "no {TABLE_BEGIN} … {TABLE_END} section"
        )));
    };
    if e < b {
        return Err(crate::Error::Other(
            "chaos table markers out of order".into(),
        ));
    }
    Ok(format!(
        "{}{TABLE_BEGIN}\n{}\n{}",
        &doc[..b],
        section.trim_end(),
        &doc[e..]
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_run_table_replaces_only_its_section() {
        let doc = format!("# R\nbefore\n{TABLE_BEGIN}\nold\n{TABLE_END}\nafter\n");
        let out = replace_run_table(&doc, "new table\n").unwrap();
        assert_eq!(
            out,
            format!("# R\nbefore\n{TABLE_BEGIN}\nnew table\n{TABLE_END}\nafter\n")
        );
        assert!(replace_run_table("no markers", "x").is_err());
    }
}

//! Writes the CRD YAML of every gpufed kind: `crdgen [DIR]` writes one file per kind into DIR
//! (default `crds/yaml`) and copies each into the chart that installs it.

use std::path::PathBuf;

use gpufed_crds::{Side, all_crds, crd_file_name, crd_yaml};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("crds/yaml"));
    std::fs::create_dir_all(&out)?;
    for (side, crd) in all_crds() {
        let yaml = crd_yaml(&crd)?;
        let name = crd_file_name(&crd);
        std::fs::write(out.join(&name), &yaml)?;
        let chart = match side {
            Side::Hub => "gpufed-hub",
            Side::Member => "gpufed-member",
        };
        let chart_crds = root.join("charts").join(chart).join("crds");
        if chart_crds.is_dir() {
            std::fs::write(chart_crds.join(&name), &yaml)?;
        }
        println!("wrote {name}");
    }
    Ok(())
}

//! GPU model names: from what the driver reports (`NVIDIA H100 80GB HBM3`) to the short model that
//! the whole of gpufed speaks (`H100`).
//!
//! The normalised model is what a ComputeJob lists in its accepted models, what the hub prices per
//! GPU-hour, and the value of the Node label `gpufed.io/gpu-model` that job pods select on; so it
//! must be stable across form factors (SXM, PCIe, NVL, memory sizes) and a valid label value.

/// Brand words that carry no model information.
const BRAND_WORDS: &[&str] = &["nvidia", "tesla", "geforce", "quadro"];

/// Words that follow an RTX/GTX number and belong to the model (`RTX 6000 Ada`, `GTX 1080 Ti`).
const SUFFIX_WORDS: &[&str] = &["ada", "ti", "super"];

/// Longest label value Kubernetes accepts.
const MAX_LABEL_VALUE: usize = 63;

/// The short model of a GPU product name: `NVIDIA A100-SXM4-40GB` → `A100`,
/// `NVIDIA GeForce RTX 4090` → `RTX4090`, `Tesla T4` → `T4`.
///
/// Known shapes are a data-centre model token (letters then digits, optionally a letter suffix:
/// `H100`, `L40S`, `GH200`, `A10G`) or an `RTX`/`GTX` series joined with its number. Anything else
/// becomes a sanitised form of the name without brand words, which always matches
/// `^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$` and is at most 63 characters (a valid label value);
/// an empty or unusable name becomes `unknown`.
pub fn normalize_model(name: &str) -> String {
    let tokens: Vec<&str> = name
        .split(|c: char| c.is_whitespace() || c == '-' || c == '_')
        .filter(|t| !t.is_empty())
        .filter(|t| !BRAND_WORDS.contains(&t.to_ascii_lowercase().as_str()))
        .collect();
    let Some(first) = tokens.first() else {
        return "unknown".to_string();
    };
    let upper = first.to_ascii_uppercase();
    if (upper == "RTX" || upper == "GTX")
        && let Some(number) = tokens.get(1)
    {
        let mut model = format!("{upper}{}", number.to_ascii_uppercase());
        if let Some(suffix) = tokens.get(2) {
            let lower = suffix.to_ascii_lowercase();
            if SUFFIX_WORDS.contains(&lower.as_str()) {
                model.push_str(&capitalise(&lower));
            }
        }
        return sanitise(&model);
    }
    if is_model_token(first) {
        return sanitise(&upper);
    }
    sanitise(&tokens.join("-"))
}

/// Letters (1–3), digits (1–4), then at most two letters: `H100`, `L4`, `L40S`, `GH200`, `A10G`.
fn is_model_token(token: &str) -> bool {
    let bytes = token.as_bytes();
    let letters = bytes.iter().take_while(|b| b.is_ascii_alphabetic()).count();
    let digits = bytes[letters..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    let rest = &bytes[letters + digits..];
    (1..=3).contains(&letters)
        && (1..=4).contains(&digits)
        && rest.len() <= 2
        && rest.iter().all(|b| b.is_ascii_alphabetic())
}

fn capitalise(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(c) => c.to_ascii_uppercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

/// Replace characters a label value cannot hold with `-`, squeeze repeats, trim the edges to
/// alphanumerics and cut to 63 characters.
fn sanitise(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let c = if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
            c
        } else {
            '-'
        };
        if c == '-' && out.ends_with('-') {
            continue;
        }
        out.push(c);
    }
    out.truncate(MAX_LABEL_VALUE);
    let trimmed = out.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if trimmed.is_empty() {
        "unknown".to_string()
    } else {
        trimmed.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_label_value(s: &str) -> bool {
        let b = s.as_bytes();
        !b.is_empty()
            && b.len() <= MAX_LABEL_VALUE
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
    }

    #[test]
    fn driver_product_names_normalise_to_the_short_model() {
        let table = [
            ("NVIDIA H100 80GB HBM3", "H100"),
            ("NVIDIA H100 PCIe", "H100"),
            ("NVIDIA H100 NVL", "H100"),
            ("NVIDIA A100-SXM4-40GB", "A100"),
            ("NVIDIA A100-SXM4-80GB", "A100"),
            ("NVIDIA A100 80GB PCIe", "A100"),
            ("NVIDIA A100-PCIE-40GB", "A100"),
            ("NVIDIA GeForce RTX 4090", "RTX4090"),
            ("NVIDIA L40S", "L40S"),
            ("NVIDIA L4", "L4"),
            ("Tesla T4", "T4"),
            ("Tesla V100-SXM2-16GB", "V100"),
            ("NVIDIA H200", "H200"),
            ("NVIDIA H200 NVL", "H200"),
            ("NVIDIA GH200 480GB", "GH200"),
            ("NVIDIA RTX A6000", "RTXA6000"),
            ("NVIDIA RTX 6000 Ada Generation", "RTX6000Ada"),
            ("NVIDIA GeForce GTX 1080 Ti", "GTX1080Ti"),
            ("NVIDIA A10G", "A10G"),
            ("NVIDIA B200", "B200"),
            ("  nvidia   l4  ", "L4"),
        ];
        for (name, model) in table {
            assert_eq!(normalize_model(name), model, "{name}");
        }
    }

    #[test]
    fn unknown_names_become_sanitised_label_values() {
        let table = [
            ("Acme Tensor Brick", "Acme-Tensor-Brick"),
            ("NVIDIA TITAN RTX", "TITAN-RTX"),
            ("Weird/GPU (rev 2)!", "Weird-GPU-rev-2"),
            ("", "unknown"),
            ("NVIDIA", "unknown"),
            ("***", "unknown"),
        ];
        for (name, model) in table {
            let got = normalize_model(name);
            assert_eq!(got, model, "{name}");
            assert!(is_label_value(&got), "{got}");
        }
    }

    #[test]
    fn very_long_names_are_cut_to_a_label_value() {
        let got = normalize_model(&format!("Prototype {}", "x".repeat(200)));
        assert!(got.len() <= MAX_LABEL_VALUE, "{got}");
        assert!(is_label_value(&got), "{got}");
    }

    proptest::proptest! {
        #[test]
        fn any_name_normalises_to_a_valid_label_value(name in "\\PC{0,80}") {
            let got = normalize_model(&name);
            proptest::prop_assert!(is_label_value(&got), "{:?} -> {:?}", name, got);
        }
    }
}

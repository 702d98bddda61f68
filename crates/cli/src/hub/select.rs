//! Which files of a repository make a model: the GGUF (or every part of a split GGUF) for
//! the asked quantization, and the vision projector beside it. Plain code over file names.

use std::collections::BTreeMap;
use std::fmt;

/// `OWNER/NAME[:QUANT]`, as `pull` and `--model` take it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubRef {
    /// `OWNER/NAME`.
    pub repo: String,
    /// Quantization tag (`Q4_K_M`), if one was named.
    pub quant: Option<String>,
}

impl HubRef {
    /// Parse a reference; `None` when `s` is not one (a path, a bundled id, a URL).
    pub fn parse(s: &str) -> Option<HubRef> {
        let (repo, quant) = match s.rsplit_once(':') {
            Some((r, q)) => (r, Some(q)),
            None => (s, None),
        };
        let (owner, name) = repo.split_once('/')?;
        let word = |w: &str| {
            !w.is_empty()
                && !w.starts_with('.')
                && !w.starts_with('-')
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if !word(owner) || !word(name) || name.to_ascii_lowercase().ends_with(".gguf") {
            return None;
        }
        if let Some(q) = quant {
            if !word(q) {
                return None;
            }
        }
        Some(HubRef {
            repo: repo.to_owned(),
            quant: quant.map(str::to_owned),
        })
    }

    /// The id a pulled model is served under: the repository's name, lower-cased, without a
    /// `-GGUF` suffix (`ggml-org/gemma-3-4b-it-GGUF` → `gemma-3-4b-it`).
    pub fn model_id(&self) -> String {
        let name = self.repo.rsplit('/').next().unwrap_or(&self.repo);
        let lower = name.to_ascii_lowercase();
        let trimmed = lower
            .strip_suffix("-gguf")
            .or_else(|| lower.strip_suffix("_gguf"))
            .or_else(|| lower.strip_suffix(".gguf"))
            .unwrap_or(&lower);
        trimmed.to_owned()
    }
}

impl fmt::Display for HubRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.quant {
            Some(q) => write!(f, "{}:{q}", self.repo),
            None => f.write_str(&self.repo),
        }
    }
}

/// A file of a repository, as its listing gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    /// Path inside the repository.
    pub name: String,
    /// Size in bytes, when known.
    pub size: Option<u64>,
    /// SHA-256 of the content (large files carry it), lower-case hex.
    pub sha256: Option<String>,
}

/// What to fetch for a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// The model's files: one GGUF, or every part of a split one in order (llama.cpp opens
    /// the first and finds the others beside it).
    pub model: Vec<RemoteFile>,
    /// The quantization chosen, when the file names say it.
    pub quant: Option<String>,
    /// The vision projector, when the repository has one.
    pub mmproj: Option<RemoteFile>,
}

/// Why no model could be chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectError {
    /// The repository holds no model GGUF.
    NoGguf,
    /// No file for the asked quantization; the ones there are.
    NoSuchQuant {
        asked: String,
        available: Vec<String>,
    },
    /// Several quantizations and none named.
    Ambiguous { available: Vec<String> },
    /// A split GGUF misses some of its parts.
    IncompleteSplit {
        name: String,
        have: usize,
        of: usize,
    },
}

impl fmt::Display for SelectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_owned()
            } else {
                v.join(", ")
            }
        };
        match self {
            SelectError::NoGguf => f.write_str("the repository has no GGUF model file"),
            SelectError::NoSuchQuant { asked, available } => write!(
                f,
                "no {asked} file in the repository; available quantizations: {}",
                list(available)
            ),
            SelectError::Ambiguous { available } => write!(
                f,
                "the repository has several quantizations ({}); name one as REPO:QUANT",
                list(available)
            ),
            SelectError::IncompleteSplit { name, have, of } => write!(
                f,
                "{name} is split in {of} parts but the repository has {have} of them"
            ),
        }
    }
}

impl std::error::Error for SelectError {}

/// Quantizations tried, in order, when none is named (the tag llama.cpp's `-hf` takes by
/// default first).
const PREFERRED: &[&str] = &["Q4_K_M", "Q4_0", "Q8_0", "Q5_K_M", "Q6_K", "F16", "BF16"];

/// `X-00001-of-00003.gguf` → (`X`, 1, 3).
fn split_part(stem: &str) -> Option<(&str, usize, usize)> {
    let (head, of) = stem.rsplit_once("-of-")?;
    let (base, no) = head.rsplit_once('-')?;
    let digits = |s: &str| s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(no) || !digits(of) {
        return None;
    }
    Some((base, no.parse().ok()?, of.parse().ok()?))
}

fn looks_like_quant(tag: &str) -> bool {
    let t = tag.to_ascii_uppercase();
    let after = |p: &str| {
        t.strip_prefix(p)
            .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
    };
    after("Q")
        || after("IQ")
        || after("TQ")
        || after("MXFP")
        || matches!(t.as_str(), "F16" | "BF16" | "F32" | "FP16" | "FP32")
}

/// The quantization a file name carries: the last `-`/`.`-separated word of its stem that
/// looks like one (`gemma-3-4b-it-Q4_K_M.gguf` → `Q4_K_M`), upper-cased.
pub fn quant_of(name: &str) -> Option<String> {
    let base = name.rsplit('/').next().unwrap_or(name);
    let stem = base
        .strip_suffix(".gguf")
        .or_else(|| base.strip_suffix(".GGUF"))?;
    let stem = split_part(stem).map_or(stem, |(b, _, _)| b);
    stem.rsplit(['-', '.'])
        .find(|w| looks_like_quant(w))
        .map(str::to_ascii_uppercase)
}

pub(crate) fn is_gguf(name: &str) -> bool {
    name.to_ascii_lowercase().ends_with(".gguf")
}

pub(crate) fn is_projector(name: &str) -> bool {
    name.rsplit('/')
        .next()
        .unwrap_or(name)
        .to_ascii_lowercase()
        .contains("mmproj")
}

/// One model in the listing: a single file or the parts of a split one.
#[derive(Debug)]
struct Group<'a> {
    parts: BTreeMap<usize, &'a RemoteFile>,
    of: usize,
    quant: Option<String>,
}

fn groups(files: &[RemoteFile]) -> BTreeMap<String, Group<'_>> {
    let mut out: BTreeMap<String, Group<'_>> = BTreeMap::new();
    for f in files
        .iter()
        .filter(|f| is_gguf(&f.name) && !is_projector(&f.name))
    {
        let stem = &f.name[..f.name.len() - ".gguf".len()];
        let (key, no, of) = match split_part(stem) {
            Some((base, no, of)) => (base.to_owned(), no, of),
            None => (stem.to_owned(), 1, 1),
        };
        let g = out.entry(key).or_insert_with(|| Group {
            parts: BTreeMap::new(),
            of,
            quant: quant_of(&f.name),
        });
        g.parts.insert(no, f);
    }
    out
}

/// Choose the model files for `quant` (any when `None`, preferring [`PREFERRED`]).
pub fn select(files: &[RemoteFile], quant: Option<&str>) -> Result<Selection, SelectError> {
    let groups = groups(files);
    if groups.is_empty() {
        return Err(SelectError::NoGguf);
    }
    let mut available: Vec<String> = groups.values().filter_map(|g| g.quant.clone()).collect();
    available.sort();
    available.dedup();
    let matches = |g: &Group<'_>, q: &str| {
        g.quant
            .as_deref()
            .is_some_and(|x| x.eq_ignore_ascii_case(q))
    };
    let chosen = match quant {
        Some(q) => {
            let hit = groups.iter().find(|(_, g)| matches(g, q)).or_else(|| {
                // A tag that is not the last word, such as `UD-Q4_K_XL`.
                let needle = q.to_ascii_lowercase();
                groups.iter().find(|(k, _)| {
                    let k = k.to_ascii_lowercase();
                    k.split(['-', '.', '/']).any(|w| w == needle)
                        || k.ends_with(&format!("-{needle}"))
                        || k.ends_with(&format!(".{needle}"))
                })
            });
            hit.ok_or_else(|| SelectError::NoSuchQuant {
                asked: q.to_owned(),
                available: available.clone(),
            })?
        }
        None => {
            let preferred = PREFERRED
                .iter()
                .find_map(|p| groups.iter().find(|(_, g)| matches(g, p)));
            match preferred {
                Some(hit) => hit,
                None if groups.len() == 1 => groups.iter().next().expect("one group"),
                None => return Err(SelectError::Ambiguous { available }),
            }
        }
    };
    let (name, group) = chosen;
    if group.parts.len() != group.of || (1..=group.of).any(|n| !group.parts.contains_key(&n)) {
        return Err(SelectError::IncompleteSplit {
            name: name.clone(),
            have: group.parts.len(),
            of: group.of,
        });
    }
    let quant = group.quant.clone();
    Ok(Selection {
        model: group.parts.values().map(|f| (*f).clone()).collect(),
        mmproj: projector(files, quant.as_deref()),
        quant,
    })
}

/// The projector for a model of quantization `quant`: the one of that quantization, else the
/// most precise one, else the first.
fn projector(files: &[RemoteFile], quant: Option<&str>) -> Option<RemoteFile> {
    let mut projs: Vec<&RemoteFile> = files
        .iter()
        .filter(|f| is_gguf(&f.name) && is_projector(&f.name))
        .collect();
    projs.sort_by(|a, b| a.name.cmp(&b.name));
    let of = |q: &str| {
        projs
            .iter()
            .find(|f| quant_of(&f.name).is_some_and(|x| x.eq_ignore_ascii_case(q)))
            .copied()
    };
    quant
        .and_then(of)
        .or_else(|| ["F16", "BF16", "F32", "Q8_0"].iter().find_map(|q| of(q)))
        .or_else(|| projs.first().copied())
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(names: &[&str]) -> Vec<RemoteFile> {
        names
            .iter()
            .map(|n| RemoteFile {
                name: (*n).to_owned(),
                size: Some(1),
                sha256: None,
            })
            .collect()
    }

    fn names(s: &Selection) -> Vec<&str> {
        s.model.iter().map(|f| f.name.as_str()).collect()
    }

    #[test]
    fn references_parse() {
        assert_eq!(
            HubRef::parse("ggml-org/gemma-3-4b-it-GGUF:Q4_K_M"),
            Some(HubRef {
                repo: "ggml-org/gemma-3-4b-it-GGUF".into(),
                quant: Some("Q4_K_M".into())
            })
        );
        assert_eq!(HubRef::parse("unsloth/Qwen3-8B-GGUF").unwrap().quant, None);
        for not in [
            "gemma-3-270m",
            "/models/a.gguf",
            "models/a.gguf",
            "./a/b",
            "a/b/c",
            "http://h:1",
            "a/b:",
            "a/b:c d",
            "../x",
        ] {
            assert_eq!(HubRef::parse(not), None, "{not}");
        }
        assert_eq!(
            HubRef::parse("ggml-org/gemma-3-4b-it-GGUF:Q4_K_M")
                .unwrap()
                .model_id(),
            "gemma-3-4b-it"
        );
        assert_eq!(
            HubRef::parse("Qwen/Qwen3-0.6B").unwrap().model_id(),
            "qwen3-0.6b"
        );
    }

    #[test]
    fn quantizations_come_from_file_names() {
        assert_eq!(
            quant_of("gemma-3-4b-it-Q4_K_M.gguf").as_deref(),
            Some("Q4_K_M")
        );
        assert_eq!(
            quant_of("SmolLM2-135M-Instruct.Q4_1.gguf").as_deref(),
            Some("Q4_1")
        );
        assert_eq!(
            quant_of("Qwen3-8B-UD-Q4_K_XL.gguf").as_deref(),
            Some("Q4_K_XL")
        );
        assert_eq!(
            quant_of("ggml-model-iq4_nl.gguf").as_deref(),
            Some("IQ4_NL")
        );
        assert_eq!(quant_of("m-f16.gguf").as_deref(), Some("F16"));
        assert_eq!(
            quant_of("Q8_0/big-Q8_0-00002-of-00003.gguf").as_deref(),
            Some("Q8_0")
        );
        assert_eq!(quant_of("model.gguf"), None);
        assert_eq!(quant_of("README.md"), None);
    }

    #[test]
    fn the_asked_quantization_is_chosen_with_its_projector() {
        let fs = files(&[
            "README.md",
            "gemma-3-4b-it-Q4_K_M.gguf",
            "gemma-3-4b-it-Q8_0.gguf",
            "gemma-3-4b-it-f16.gguf",
            "mmproj-model-f16.gguf",
            "mmproj-model-Q8_0.gguf",
        ]);
        let s = select(&fs, Some("q8_0")).unwrap();
        assert_eq!(names(&s), ["gemma-3-4b-it-Q8_0.gguf"]);
        assert_eq!(s.quant.as_deref(), Some("Q8_0"));
        assert_eq!(s.mmproj.unwrap().name, "mmproj-model-Q8_0.gguf");
        let s = select(&fs, Some("Q4_K_M")).unwrap();
        assert_eq!(s.mmproj.unwrap().name, "mmproj-model-f16.gguf");
        // None named: Q4_K_M first.
        assert_eq!(
            names(&select(&fs, None).unwrap()),
            ["gemma-3-4b-it-Q4_K_M.gguf"]
        );
    }

    #[test]
    fn a_missing_quantization_lists_the_others() {
        let fs = files(&["m-Q4_K_M.gguf", "m-Q8_0.gguf", "mmproj-f16.gguf"]);
        let e = select(&fs, Some("Q2_K")).unwrap_err();
        assert_eq!(
            e,
            SelectError::NoSuchQuant {
                asked: "Q2_K".into(),
                available: vec!["Q4_K_M".into(), "Q8_0".into()]
            }
        );
        assert!(e
            .to_string()
            .contains("available quantizations: Q4_K_M, Q8_0"));
        let e = select(&files(&["m-Q3_K_S.gguf", "m-Q5_0.gguf"]), None).unwrap_err();
        assert!(matches!(e, SelectError::Ambiguous { .. }), "{e}");
        assert_eq!(
            select(&files(&["README.md", "mmproj-f16.gguf"]), None),
            Err(SelectError::NoGguf)
        );
        // One model file and no tag: that one.
        assert_eq!(
            names(&select(&files(&["model.gguf"]), None).unwrap()),
            ["model.gguf"]
        );
    }

    #[test]
    fn split_models_come_whole_and_in_order() {
        let fs = files(&[
            "Q8_0/big-Q8_0-00002-of-00003.gguf",
            "Q8_0/big-Q8_0-00001-of-00003.gguf",
            "Q8_0/big-Q8_0-00003-of-00003.gguf",
            "big-Q4_K_M.gguf",
        ]);
        let s = select(&fs, Some("Q8_0")).unwrap();
        assert_eq!(
            names(&s),
            [
                "Q8_0/big-Q8_0-00001-of-00003.gguf",
                "Q8_0/big-Q8_0-00002-of-00003.gguf",
                "Q8_0/big-Q8_0-00003-of-00003.gguf"
            ]
        );
        let e = select(&fs[..2], Some("Q8_0")).unwrap_err();
        assert_eq!(
            e,
            SelectError::IncompleteSplit {
                name: "Q8_0/big-Q8_0".into(),
                have: 2,
                of: 3
            }
        );
    }

    #[test]
    fn a_tag_inside_the_name_matches() {
        let fs = files(&["Qwen3-8B-UD-Q4_K_XL.gguf", "Qwen3-8B-Q4_K_M.gguf"]);
        assert_eq!(
            names(&select(&fs, Some("UD-Q4_K_XL")).unwrap()),
            ["Qwen3-8B-UD-Q4_K_XL.gguf"]
        );
    }
}

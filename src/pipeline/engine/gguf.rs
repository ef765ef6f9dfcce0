//! Just enough of the GGUF format to list a file's tensor names, without loading it: which
//! weights a LoRA adapter changes decides whether its policy's logits stay linear in the
//! final hidden state (an adapter on the output tensor does not). Bounded: a corrupt file
//! gives an error, not a huge allocation.

use anyhow::{bail, Context, Result};
use std::io::{BufReader, Read};
use std::path::Path;

/// The longest string and the largest array a header may hold.
const MAX_STRING: u64 = 1 << 24;
const MAX_ITEMS: u64 = 1 << 28;

/// The names of the tensors a GGUF file holds, in file order.
pub fn tensor_names(path: &Path) -> Result<Vec<String>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut r = BufReader::new(file);
    read_names(&mut r).with_context(|| format!("{} is not a readable GGUF file", path.display()))
}

fn read_names(r: &mut impl Read) -> Result<Vec<String>> {
    let mut magic = [0u8; 4];
    r.read_exact(&mut magic)?;
    if &magic != b"GGUF" {
        bail!("wrong magic bytes");
    }
    let version = u32_of(r)?;
    if !(2..=3).contains(&version) {
        bail!("GGUF version {version} is not 2 or 3");
    }
    let (n_tensors, n_kv) = (u64_of(r)?, u64_of(r)?);
    if n_tensors > MAX_ITEMS || n_kv > MAX_ITEMS {
        bail!("implausible counts ({n_tensors} tensors, {n_kv} keys)");
    }
    for _ in 0..n_kv {
        string(r)?;
        let kind = u32_of(r)?;
        skip_value(r, kind)?;
    }
    let mut names = Vec::with_capacity(n_tensors.min(1 << 16) as usize);
    for _ in 0..n_tensors {
        names.push(string(r)?);
        let n_dims = u32_of(r)?;
        if n_dims > 8 {
            bail!("a tensor with {n_dims} dimensions");
        }
        for _ in 0..n_dims {
            u64_of(r)?;
        }
        u32_of(r)?; // type
        u64_of(r)?; // offset
    }
    Ok(names)
}

fn u32_of(r: &mut impl Read) -> Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn u64_of(r: &mut impl Read) -> Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn string(r: &mut impl Read) -> Result<String> {
    let n = u64_of(r)?;
    if n > MAX_STRING {
        bail!("a string of {n} bytes");
    }
    let mut b = vec![0u8; n as usize];
    r.read_exact(&mut b)?;
    Ok(String::from_utf8_lossy(&b).into_owned())
}

fn skip(r: &mut impl Read, n: u64) -> Result<()> {
    let copied = std::io::copy(&mut r.take(n), &mut std::io::sink())?;
    if copied != n {
        bail!("the file ends early");
    }
    Ok(())
}

/// Skips a value of GGUF type `kind`.
fn skip_value(r: &mut impl Read, kind: u32) -> Result<()> {
    match kind {
        0 | 1 | 7 => skip(r, 1),
        2 | 3 => skip(r, 2),
        4..=6 => skip(r, 4),
        10..=12 => skip(r, 8),
        8 => string(r).map(|_| ()),
        9 => {
            let (item, n) = (u32_of(r)?, u64_of(r)?);
            if n > MAX_ITEMS {
                bail!("an array of {n} items");
            }
            let width = match item {
                0 | 1 | 7 => Some(1),
                2 | 3 => Some(2),
                4..=6 => Some(4),
                10..=12 => Some(8),
                _ => None,
            };
            match width {
                Some(w) => skip(r, n * w),
                None => (0..n).try_for_each(|_| skip_value(r, item)),
            }
        }
        other => bail!("unknown value type {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GGUF header with one string key, one array key and the given tensors.
    fn file(names: &[&str]) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend((names.len() as u64).to_le_bytes());
        b.extend(2u64.to_le_bytes());
        let s = |b: &mut Vec<u8>, t: &str| {
            b.extend((t.len() as u64).to_le_bytes());
            b.extend(t.as_bytes());
        };
        s(&mut b, "general.name");
        b.extend(8u32.to_le_bytes());
        s(&mut b, "tiny");
        s(&mut b, "tokenizer.ggml.tokens");
        b.extend(9u32.to_le_bytes());
        b.extend(8u32.to_le_bytes());
        b.extend(2u64.to_le_bytes());
        s(&mut b, "a");
        s(&mut b, "bb");
        for n in names {
            s(&mut b, n);
            b.extend(2u32.to_le_bytes());
            b.extend(4u64.to_le_bytes());
            b.extend(8u64.to_le_bytes());
            b.extend(0u32.to_le_bytes());
            b.extend(0u64.to_le_bytes());
        }
        b
    }

    #[test]
    fn names_come_out_in_order_and_damage_is_an_error() {
        let bytes = file(&["blk.0.attn_q.weight.lora_a", "output.weight.lora_b"]);
        let names = read_names(&mut &bytes[..]).unwrap();
        assert_eq!(names, ["blk.0.attn_q.weight.lora_a", "output.weight.lora_b"]);
        for cut in [3, 10, 30, bytes.len() - 1] {
            assert!(read_names(&mut &bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut huge = bytes.clone();
        huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(read_names(&mut &huge[..]).is_err());
    }

    #[test]
    fn the_test_adapter_lists_its_matrices() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/fixtures/test-lora.gguf");
        let names = tensor_names(&path).expect("models/setup.sh writes the test adapter");
        assert!(names.iter().any(|n| n.contains("attn_q")), "{names:?}");
        assert!(!names.iter().any(|n| n.starts_with("output.")), "{names:?}");
    }
}

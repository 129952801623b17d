//! Reading and writing NumPy `.npy` files (format versions 1 to 3, little-endian).

use crate::{CoreError, DType, Result, Tensor};

const MAGIC: &[u8] = b"\x93NUMPY";

fn bad(msg: impl Into<String>) -> CoreError {
    CoreError::Npy(msg.into())
}

/// Parses a `.npy` file. float64 data is converted to float32, bool to uint8.
pub fn from_bytes(bytes: &[u8]) -> Result<Tensor> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(bad("not an .npy file (bad magic bytes)"));
    }
    let major = bytes[6];
    let (header_len, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(bad("truncated header"));
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => return Err(bad(format!("unsupported format version {v}"))),
    };
    let header = bytes
        .get(start..start.saturating_add(header_len))
        .ok_or_else(|| bad("truncated header"))?;
    let header = std::str::from_utf8(header).map_err(|_| bad("header is not text"))?;
    let descr = dict_value(header, "descr").ok_or_else(|| bad("header has no 'descr'"))?;
    let fortran = dict_value(header, "fortran_order").ok_or_else(|| bad("header has no 'fortran_order'"))?;
    let shape_text = dict_value(header, "shape").ok_or_else(|| bad("header has no 'shape'"))?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let mut shape = Vec::new();
    let inner = shape_text.trim().trim_start_matches('(').trim_end_matches(')');
    for part in inner.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        shape.push(
            part.parse::<usize>()
                .map_err(|_| bad(format!("bad shape {shape_text}")))?,
        );
    }
    let data = &bytes[start + header_len..];
    let fortran = match fortran.trim() {
        "False" => false,
        "True" => true,
        other => return Err(bad(format!("bad fortran_order {other}"))),
    };
    let storage_shape: Vec<usize> = if fortran {
        shape.iter().rev().copied().collect()
    } else {
        shape.clone()
    };
    let n = crate::tensor::checked_numel(&storage_shape)?;
    let t = match descr {
        "<f4" => Tensor::from_le_bytes(DType::F32, &storage_shape, exact(data, n, 4)?)?,
        "<f2" => Tensor::from_le_bytes(DType::F16, &storage_shape, exact(data, n, 2)?)?,
        "|i1" | "<i1" => Tensor::from_le_bytes(DType::I8, &storage_shape, exact(data, n, 1)?)?,
        "|u1" | "<u1" | "|b1" => Tensor::from_le_bytes(DType::U8, &storage_shape, exact(data, n, 1)?)?,
        "<i4" => Tensor::from_le_bytes(DType::I32, &storage_shape, exact(data, n, 4)?)?,
        "<i8" => Tensor::from_le_bytes(DType::I64, &storage_shape, exact(data, n, 8)?)?,
        "<f8" => {
            let v: Vec<f32> = exact(data, n, 8)?
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
                .collect();
            Tensor::from_f32(&storage_shape, v)?
        }
        other => {
            return Err(bad(format!(
                "unsupported dtype '{other}' (use float32, float16, float64, int8, uint8, int32 or int64, little-endian)"
            )));
        }
    };
    if fortran {
        let perm: Vec<usize> = (0..shape.len()).rev().collect();
        return Ok(transpose(&t, &perm));
    }
    Ok(t)
}

fn exact(data: &[u8], n: usize, size: usize) -> Result<&[u8]> {
    let want = n.checked_mul(size).ok_or_else(|| bad("shape too large"))?;
    if data.len() < want {
        return Err(bad(format!(
            "data is truncated: need {want} bytes, have {}",
            data.len()
        )));
    }
    Ok(&data[..want])
}

fn transpose(t: &Tensor, perm: &[usize]) -> Tensor {
    fn go<T: Clone>(a: &ndarray::ArrayD<T>, perm: &[usize]) -> ndarray::ArrayD<T> {
        a.view().permuted_axes(perm.to_vec()).as_standard_layout().into_owned()
    }
    match t {
        Tensor::F32(a) => Tensor::F32(go(a, perm)),
        Tensor::F16(a) => Tensor::F16(go(a, perm)),
        Tensor::I8(a) => Tensor::I8(go(a, perm)),
        Tensor::U8(a) => Tensor::U8(go(a, perm)),
        Tensor::I32(a) => Tensor::I32(go(a, perm)),
        Tensor::I64(a) => Tensor::I64(go(a, perm)),
    }
}

/// Finds `'key': value` in a Python dict literal; the value ends at the next top-level comma.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let pos = header
        .find(&format!("'{key}'"))
        .or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = &header[pos + key.len() + 2..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let mut depth = 0i32;
    for (i, ch) in rest.char_indices() {
        match ch {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            ',' | '}' if depth == 0 => return Some(rest[..i].trim()),
            _ => {}
        }
    }
    None
}

/// Serializes a tensor as a version 1.0 `.npy` file.
pub fn to_bytes(t: &Tensor) -> Vec<u8> {
    let descr = match t.dtype() {
        DType::F32 => "<f4",
        DType::F16 => "<f2",
        DType::I8 => "|i1",
        DType::U8 => "|u1",
        DType::I32 => "<i4",
        DType::I64 => "<i8",
    };
    let shape = match t.shape() {
        [one] => format!("({one},)"),
        dims => format!(
            "({})",
            dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
        ),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    let total = MAGIC.len() + 4 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + t.len() * t.dtype().size_of());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&t.to_le_bytes());
    out
}

/// Reads a `.npy` file from disk.
pub fn read(path: &std::path::Path) -> Result<Tensor> {
    let bytes = std::fs::read(path).map_err(|source| CoreError::Io {
        path: path.display().to_string(),
        source,
    })?;
    from_bytes(&bytes).map_err(|e| match e {
        CoreError::Npy(m) => CoreError::Npy(format!("{}: {m}", path.display())),
        other => other,
    })
}

/// Writes a `.npy` file to disk.
pub fn write(path: &std::path::Path, t: &Tensor) -> Result<()> {
    std::fs::write(path, to_bytes(t)).map_err(|source| CoreError::Io {
        path: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let t = Tensor::from_f32(&[2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        let b = to_bytes(&t);
        assert_eq!((b.len() - t.len() * 4) % 64, 0);
        assert_eq!(from_bytes(&b).unwrap(), t);
        let s = Tensor::i64_vec(&[7]);
        assert_eq!(from_bytes(&to_bytes(&s)).unwrap(), s);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let t = Tensor::from_f32(&[4, 4], vec![0.0; 16]).unwrap();
        let b = to_bytes(&t);
        for cut in 0..b.len() {
            let _ = from_bytes(&b[..cut]);
        }
        assert!(from_bytes(&b[..b.len() - 1]).is_err());
        assert!(from_bytes(b"hello world").is_err());
    }

    #[test]
    fn fortran_order_is_transposed() {
        let mut b = Vec::new();
        let header = "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }\n";
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&[1, 0]);
        b.extend_from_slice(&(header.len() as u16).to_le_bytes());
        b.extend_from_slice(header.as_bytes());
        for v in [1.0f32, 4.0, 2.0, 5.0, 3.0, 6.0] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        let t = from_bytes(&b).unwrap();
        assert_eq!(t.shape(), &[2, 3]);
        assert_eq!(
            t.to_f32().iter().copied().collect::<Vec<_>>(),
            vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
        );
    }
}

//! Reading and writing NumPy `.npy` files, through the `npyz` crate (format versions 1 to 3,
//! either byte order, C or Fortran order).

use crate::tensor::array_from;
use crate::{CoreError, DType, Result, Tensor};
use npyz::{TypeChar, WriterBuilder};

fn bad(msg: impl Into<String>) -> CoreError {
    CoreError::Npy(msg.into())
}

/// Parses a `.npy` file. float64 data is converted to float32, bool to uint8; the other
/// types beyond weft's computing ones (int16, uint16/32/64, raw bytes) are errors.
pub fn from_bytes(bytes: &[u8]) -> Result<Tensor> {
    let t = from_bytes_exact(bytes, None)?;
    match t.dtype() {
        DType::F64 => Ok(t.cast(DType::F32)),
        DType::Bool => Ok(t.cast(DType::U8)),
        dt if dt.is_float() || matches!(dt, DType::I8 | DType::U8 | DType::I32 | DType::I64) => Ok(t),
        dt => Err(bad(format!(
            "unsupported dtype {dt} (use float32, float16, float64, int8, uint8, bool, int32 or int64)"
        ))),
    }
}

/// Parses a `.npy` file keeping its element type. NumPy has no names for ONNX's bfloat16,
/// float8, float4, int4 and int2: their arrays (as `ml_dtypes` saves them) are raw bytes of
/// one or two bytes per element, read as `raw` when it is given and of that size.
pub fn from_bytes_exact(bytes: &[u8], raw: Option<DType>) -> Result<Tensor> {
    if !bytes.starts_with(b"\x93NUMPY") {
        return Err(bad("not an .npy file (bad magic bytes)"));
    }
    // ml_dtypes names float8_e5m2 '<f1', which no .npy reader knows: read it as raw bytes
    let patched;
    let bytes = match find(bytes, b"'descr': '<f1'") {
        Some(i) if i < 256 => {
            let mut b = bytes.to_vec();
            b[i + 11] = b'V';
            patched = b;
            &patched[..]
        }
        _ => bytes,
    };
    let mut data = bytes;
    let header = npyz::NpyHeader::from_reader(&mut data).map_err(|e| bad(format!("bad header: {e}")))?;
    let file = npyz::NpyFile::with_header(header.clone(), data);
    let data: &[u8] = data;
    let npyz::DType::Plain(ty) = header.dtype() else {
        return Err(bad("structured or array dtypes are not supported"));
    };
    let fortran = file.order() == npyz::Order::Fortran;
    let shape: Vec<usize> = file
        .shape()
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| bad("shape too large")))
        .collect::<Result<_>>()?;
    let storage_shape: Vec<usize> = if fortran {
        shape.iter().rev().copied().collect()
    } else {
        shape.clone()
    };
    // Check the data's length before reading, so a header claiming a huge shape is refused
    // without allocating for it.
    let n = crate::tensor::checked_numel(&storage_shape)?;
    let size = ty.num_bytes().unwrap_or(0);
    let want = n.checked_mul(size).ok_or_else(|| bad("shape too large"))?;
    let have = data.len();
    if have < want {
        return Err(bad(format!("data is truncated: need {want} bytes, have {have}")));
    }
    let read = |e: std::io::Error| bad(format!("bad data: {e}"));
    let t = match (ty.type_char(), size) {
        (TypeChar::Float, 4) => Tensor::F32(array_from(&storage_shape, file.into_vec::<f32>().map_err(read)?)?),
        (TypeChar::Float, 2) => Tensor::F16(array_from(&storage_shape, file.into_vec::<half::f16>().map_err(read)?)?),
        (TypeChar::Int, 1) => Tensor::I8(array_from(&storage_shape, file.into_vec::<i8>().map_err(read)?)?),
        (TypeChar::Uint, 1) => Tensor::U8(array_from(&storage_shape, file.into_vec::<u8>().map_err(read)?)?),
        (TypeChar::Bool, 1) => Tensor::Bool(array_from(&storage_shape, file.into_vec::<bool>().map_err(read)?)?),
        (TypeChar::Int, 4) => Tensor::I32(array_from(&storage_shape, file.into_vec::<i32>().map_err(read)?)?),
        (TypeChar::Int, 8) => Tensor::I64(array_from(&storage_shape, file.into_vec::<i64>().map_err(read)?)?),
        (TypeChar::Int, 2) => Tensor::I16(array_from(&storage_shape, file.into_vec::<i16>().map_err(read)?)?),
        (TypeChar::Uint, 2) => Tensor::U16(array_from(&storage_shape, file.into_vec::<u16>().map_err(read)?)?),
        (TypeChar::Uint, 4) => Tensor::U32(array_from(&storage_shape, file.into_vec::<u32>().map_err(read)?)?),
        (TypeChar::Uint, 8) => Tensor::U64(array_from(&storage_shape, file.into_vec::<u64>().map_err(read)?)?),
        (TypeChar::Float, 8) => Tensor::F64(array_from(&storage_shape, file.into_vec::<f64>().map_err(read)?)?),
        (TypeChar::RawData, n) if raw.is_some_and(|r| r.size_of() == n && n <= 2) => {
            let dt = raw.unwrap_or(DType::U8);
            // raw elements have no byte order: these are the little-endian bytes ml_dtypes wrote
            Tensor::from_le_bytes(dt, &storage_shape, &data[..want])?
        }
        _ => {
            let hint = match raw {
                Some(r) if !r.is_float() && r.is_storage_only() => format!(" for {r}"),
                _ => String::new(),
            };
            return Err(bad(format!(
                "unsupported dtype '{ty}'{hint} (use float16/32/64, int8/16/32/64, uint8/16/32/64, bool, \
                 or raw bytes of the model's bfloat16, float8, float4, int4 or int2 input)"
            )));
        }
    };
    if fortran {
        let perm: Vec<usize> = (0..shape.len()).rev().collect();
        return Ok(transpose(&t, &perm));
    }
    Ok(t)
}

fn transpose(t: &Tensor, perm: &[usize]) -> Tensor {
    fn go<T: Clone>(a: &ndarray::ArrayD<T>, perm: &[usize]) -> ndarray::ArrayD<T> {
        a.view().permuted_axes(perm.to_vec()).as_standard_layout().into_owned()
    }
    crate::map_variant!(t, a => go(a, perm))
}

/// Serializes a tensor as a `.npy` file (C order, little-endian).
pub fn to_bytes(t: &Tensor) -> Vec<u8> {
    fn write<T: npyz::AutoSerialize + Copy>(
        shape: &[usize],
        data: impl Iterator<Item = T>,
    ) -> std::io::Result<Vec<u8>> {
        let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
        let mut out = Vec::new();
        let mut w = npyz::WriteOptions::new()
            .default_dtype()
            .shape(&shape)
            .writer(&mut out)
            .begin_nd()?;
        w.extend(data)?;
        w.finish()?;
        Ok(out)
    }
    let shape = t.shape();
    let written = match t {
        Tensor::F32(a) => write(shape, a.iter().copied()),
        Tensor::F16(a) => write(shape, a.iter().copied()),
        Tensor::I8(a) => write(shape, a.iter().copied()),
        Tensor::U8(a) => write(shape, a.iter().copied()),
        Tensor::I32(a) => write(shape, a.iter().copied()),
        Tensor::I64(a) => write(shape, a.iter().copied()),
        Tensor::F64(a) => write(shape, a.iter().copied()),
        Tensor::Bool(a) => write(shape, a.iter().copied()),
        Tensor::I16(a) => write(shape, a.iter().copied()),
        Tensor::U16(a) => write(shape, a.iter().copied()),
        Tensor::U32(a) => write(shape, a.iter().copied()),
        Tensor::U64(a) => write(shape, a.iter().copied()),
        // no NumPy name: raw bytes, as ml_dtypes saves these types
        other => Ok(raw_npy(shape, other.dtype().size_of(), &other.to_le_bytes())),
    };
    // Writing into memory cannot fail.
    written.unwrap_or_default()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).take(512).position(|w| w == needle)
}

/// A `.npy` file of raw (`<V1`, `<V2`) elements.
fn raw_npy(shape: &[usize], size: usize, data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| format!("{d},")).collect();
    let dims = if shape.len() == 1 {
        dims.concat()
    } else {
        dims.concat().trim_end_matches(',').replace(',', ", ")
    };
    let mut header = format!("{{'descr': '<V{size}', 'fortran_order': False, 'shape': ({dims}), }}");
    // magic (6) + version (2) + length (2) + header + newline, padded to 64 bytes
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// Reads a `.npy` file from disk, keeping its element type (`raw` as in [`from_bytes_exact`]).
pub fn read_exact(path: &std::path::Path, raw: Option<DType>) -> Result<Tensor> {
    let bytes = std::fs::read(path).map_err(|source| CoreError::Io {
        path: path.display().to_string(),
        source,
    })?;
    from_bytes_exact(&bytes, raw).map_err(|e| match e {
        CoreError::Npy(m) => CoreError::Npy(format!("{}: {m}", path.display())),
        other => other,
    })
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
        b.extend_from_slice(b"\x93NUMPY");
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

    fn file(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        let header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}\n");
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(header.len() as u16).to_le_bytes());
        b.extend_from_slice(header.as_bytes());
        b.extend_from_slice(data);
        b
    }

    #[test]
    fn big_endian_bool_and_half() {
        let be = file(">f4", "(2,)", &[0x3f, 0x80, 0, 0, 0x40, 0, 0, 0]);
        assert_eq!(
            from_bytes(&be).unwrap(),
            Tensor::from_f32(&[2], vec![1.0, 2.0]).unwrap()
        );
        let flags = from_bytes(&file("|b1", "(3,)", &[1, 0, 1])).unwrap();
        assert_eq!(flags.to_le_bytes(), vec![1, 0, 1]);
        assert!(
            from_bytes(&file("|b1", "(1,)", &[7])).is_err(),
            "a bool byte other than 0 or 1"
        );
        let h = Tensor::F16(ndarray::ArrayD::from_elem(
            ndarray::IxDyn(&[3]),
            half::f16::from_f32(0.5),
        ));
        assert_eq!(from_bytes(&to_bytes(&h)).unwrap(), h);
    }

    #[test]
    fn huge_shapes_and_odd_dtypes_are_errors() {
        let e = from_bytes(&file("<f4", "(1000000000000,)", &[0; 16])).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
        let e = from_bytes(&file("<c8", "(1,)", &[0; 8])).unwrap_err();
        assert!(e.to_string().contains("unsupported dtype"), "{e}");
        assert!(from_bytes(&file("<f4", "(-1,)", &[0; 4])).is_err());
    }
}

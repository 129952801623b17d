//! TensorProto to and from weft tensors.

use std::path::Path;

use weft_core::{DType, Tensor};

use crate::proto::TensorProto;
use crate::proto::tensor_proto::DataType as Dt;
use crate::{OnnxError, Result};

/// ONNX element type codes with weft's dtype for each.
const CODES: [(i32, DType); 23] = [
    (1, DType::F32),
    (2, DType::U8),
    (3, DType::I8),
    (4, DType::U16),
    (5, DType::I16),
    (6, DType::I32),
    (7, DType::I64),
    (9, DType::Bool),
    (10, DType::F16),
    (11, DType::F64),
    (12, DType::U32),
    (13, DType::U64),
    (16, DType::BF16),
    (17, DType::F8E4M3FN),
    (18, DType::F8E4M3FNUZ),
    (19, DType::F8E5M2),
    (20, DType::F8E5M2FNUZ),
    (21, DType::U4),
    (22, DType::I4),
    (23, DType::F4E2M1),
    (24, DType::F8E8M0),
    (25, DType::U2),
    (26, DType::I2),
];

/// ONNX element type code of a weft dtype.
pub fn onnx_type(dtype: DType) -> i32 {
    CODES.iter().find(|(_, d)| *d == dtype).map_or(0, |(c, _)| *c)
}

/// The weft dtype that holds exactly ONNX's type `code` (no widening, no narrowing): what
/// graph inputs, outputs and Cast targets may be. None for strings and complex numbers.
pub fn exact_weft_type(code: i32) -> Option<DType> {
    CODES.iter().find(|(c, _)| *c == code).map(|(_, d)| *d)
}

pub fn type_name(code: i32) -> String {
    // the element types added to ONNX after the project's proto was written
    let later = match code {
        17 => "FLOAT8E4M3FN",
        18 => "FLOAT8E4M3FNUZ",
        19 => "FLOAT8E5M2",
        20 => "FLOAT8E5M2FNUZ",
        21 => "UINT4",
        22 => "INT4",
        23 => "FLOAT4E2M1",
        24 => "FLOAT8E8M0",
        25 => "UINT2",
        26 => "INT2",
        _ => "",
    };
    if !later.is_empty() {
        return later.to_string();
    }
    Dt::try_from(code)
        .map(|d| d.as_str_name().to_string())
        .unwrap_or_else(|_| format!("type code {code}"))
}

/// Reads a TensorProto; `base_dir` resolves external data files.
pub fn from_proto(t: &TensorProto, base_dir: Option<&Path>) -> Result<Tensor> {
    let name = t.name();
    let bad = |m: String| OnnxError::Invalid(format!("tensor '{name}': {m}"));
    let mut shape = Vec::with_capacity(t.dims.len());
    for &d in &t.dims {
        shape.push(usize::try_from(d).map_err(|_| bad(format!("negative dimension {d}")))?);
    }
    let n = weft_core::tensor::checked_numel(&shape).map_err(|e| bad(e.to_string()))?;
    let code = t.data_type();
    let external;
    let raw: Option<&[u8]> = if t.data_location() == crate::proto::tensor_proto::DataLocation::External {
        external = read_external(t, base_dir).map_err(bad)?;
        Some(&external)
    } else {
        t.raw_data.as_deref()
    };
    let count_err = |got: usize| bad(format!("has {got} values, shape {shape:?} needs {n}"));
    let Some(dtype) = exact_weft_type(code) else {
        return Err(bad(format!("data type {} is not supported", type_name(code))));
    };
    let per_byte = per_byte(dtype);
    let unpack = |bytes: &[u8]| -> Result<Vec<u8>> {
        if bytes.len() != n.div_ceil(per_byte) {
            return Err(count_err(bytes.len() * per_byte));
        }
        let bits = 8 / per_byte;
        let mask = ((1u16 << bits) - 1) as u8;
        Ok((0..n)
            .map(|i| (bytes[i / per_byte] >> ((i % per_byte) * bits)) & mask)
            .collect())
    };
    let tensor = match (dtype, raw) {
        (dt, Some(r)) if per_byte > 1 => Tensor::from_le_bytes(dt, &shape, &unpack(r)?),
        (dt, Some(r)) => Tensor::from_le_bytes(dt, &shape, r),
        (DType::F32, None) => {
            check(t.float_data.len(), n).map_err(count_err)?;
            Tensor::from_f32(&shape, t.float_data.clone())
        }
        (DType::F64, None) => {
            check(t.double_data.len(), n).map_err(count_err)?;
            weft_core::tensor::array_from(&shape, t.double_data.clone()).map(Tensor::F64)
        }
        (DType::I64, None) => {
            check(t.int64_data.len(), n).map_err(count_err)?;
            Tensor::from_i64(&shape, t.int64_data.clone())
        }
        (DType::I32, None) => {
            check(t.int32_data.len(), n).map_err(count_err)?;
            weft_core::tensor::array_from(&shape, t.int32_data.clone()).map(Tensor::I32)
        }
        (DType::U32 | DType::U64, None) => {
            check(t.uint64_data.len(), n).map_err(count_err)?;
            let a = weft_core::tensor::array_from(&shape, t.uint64_data.clone()).map(Tensor::U64)?;
            Ok(if dtype == DType::U32 {
                Tensor::wrap_i64(a.to_i64(), DType::U32)
            } else {
                a
            })
        }
        (dt, None) if per_byte > 1 => {
            // each int32 holds one packed byte
            let bytes: Vec<u8> = t.int32_data.iter().map(|&v| v as u8).collect();
            Tensor::from_le_bytes(dt, &shape, &unpack(&bytes)?)
        }
        (dt, None) => {
            // the other types keep each element's bits in one int32
            check(t.int32_data.len(), n).map_err(count_err)?;
            let bytes: Vec<u8> = match dt.size_of() {
                2 => t.int32_data.iter().flat_map(|&v| (v as u16).to_le_bytes()).collect(),
                _ => t.int32_data.iter().map(|&v| v as u8).collect(),
            };
            Tensor::from_le_bytes(dt, &shape, &bytes)
        }
    };
    tensor.map_err(|e| bad(e.to_string()))
}

fn check(got: usize, want: usize) -> std::result::Result<(), usize> {
    if got == want { Ok(()) } else { Err(got) }
}

fn read_external(t: &TensorProto, base_dir: Option<&Path>) -> std::result::Result<Vec<u8>, String> {
    let get = |key: &str| {
        t.external_data
            .iter()
            .find(|e| e.key() == key)
            .map(|e| e.value().to_string())
    };
    let location = get("location").ok_or("external data without a location")?;
    let rel = Path::new(&location);
    if rel.is_absolute() || rel.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
        return Err(format!(
            "external data location '{location}' must stay inside the model's directory"
        ));
    }
    let base = base_dir.ok_or("external data needs the model loaded from a file")?;
    let path = base.join(rel);
    let bytes = std::fs::read(&path).map_err(|e| format!("external data file {}: {e}", path.display()))?;
    let offset: usize = get("offset")
        .map(|v| v.parse().map_err(|_| format!("bad offset {v}")))
        .transpose()?
        .unwrap_or(0);
    let end = match get("length") {
        Some(v) => offset
            .checked_add(v.parse::<usize>().map_err(|_| format!("bad length {v}"))?)
            .ok_or("bad length")?,
        None => bytes.len(),
    };
    bytes
        .get(offset..end)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| format!("external data range {offset}..{end} is outside {}", path.display()))
}

/// Writes a tensor as a TensorProto with `raw_data`.
pub fn to_proto(name: &str, t: &Tensor) -> TensorProto {
    TensorProto {
        dims: t.shape().iter().map(|&d| d as i64).collect(),
        data_type: Some(onnx_type(t.dtype())),
        name: Some(name.to_string()),
        raw_data: Some(packed_bytes(t)),
        ..Default::default()
    }
}

/// Elements per byte in ONNX's raw_data (it packs the 4- and 2-bit types, low bits first).
fn per_byte(dtype: DType) -> usize {
    match dtype {
        DType::I4 | DType::U4 | DType::F4E2M1 => 2,
        DType::I2 | DType::U2 => 4,
        _ => 1,
    }
}

/// A tensor's bytes as ONNX's raw_data holds them (4- and 2-bit types packed).
fn packed_bytes(t: &Tensor) -> Vec<u8> {
    let per_byte = per_byte(t.dtype());
    if per_byte == 1 {
        return t.to_le_bytes();
    }
    let bits = 8 / per_byte;
    let codes = t.to_le_bytes();
    codes
        .chunks(per_byte)
        .map(|c| c.iter().enumerate().fold(0u8, |acc, (i, &v)| acc | (v << (i * bits))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_bit_initializers_unpack_and_pack() {
        let codes = weft_core::tensor::array_from(&[3], vec![0x1, 0xF, 0x8]).unwrap();
        let t = Tensor::from_codes(DType::I4, codes).unwrap();
        let proto = to_proto("w", &t);
        assert_eq!(
            proto.raw_data.as_deref(),
            Some(&[0xF1u8, 0x08][..]),
            "two per byte, low nibble first"
        );
        let back = from_proto(&proto, None).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.to_i64_vec(), vec![1, -1, -8]);
        // a raw_data of the wrong length is an error, not a panic
        let short = TensorProto {
            raw_data: Some(vec![0xF1]),
            ..proto
        };
        assert!(from_proto(&short, None).is_err());
    }
}

//! TensorProto to and from weft tensors.

use std::path::Path;

use half::f16;
use weft_core::{DType, Tensor};

use crate::proto::TensorProto;
use crate::proto::tensor_proto::DataType as Dt;
use crate::{OnnxError, Result};

/// ONNX element type code of a weft dtype.
pub fn onnx_type(dtype: DType) -> i32 {
    (match dtype {
        DType::F32 => Dt::Float,
        DType::F16 => Dt::Float16,
        DType::I8 => Dt::Int8,
        DType::U8 => Dt::Uint8,
        DType::I32 => Dt::Int32,
        DType::I64 => Dt::Int64,
    }) as i32
}

/// The weft dtype that holds exactly ONNX's type `code` (no widening, no narrowing): what
/// graph inputs, outputs and Cast targets may be.
pub fn exact_weft_type(code: i32) -> Option<DType> {
    Some(match Dt::try_from(code).ok()? {
        Dt::Float => DType::F32,
        Dt::Float16 => DType::F16,
        Dt::Int8 => DType::I8,
        Dt::Uint8 => DType::U8,
        Dt::Int32 => DType::I32,
        Dt::Int64 => DType::I64,
        _ => return None,
    })
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
    let dt = Dt::try_from(code).map_err(|_| bad(format!("data type {} is not supported", type_name(code))))?;
    let tensor = match (dt, raw) {
        (Dt::Float, Some(r)) => Tensor::from_le_bytes(DType::F32, &shape, r),
        (Dt::Float16, Some(r)) => Tensor::from_le_bytes(DType::F16, &shape, r),
        (Dt::Int8, Some(r)) => Tensor::from_le_bytes(DType::I8, &shape, r),
        (Dt::Uint8 | Dt::Bool, Some(r)) => Tensor::from_le_bytes(DType::U8, &shape, r),
        (Dt::Int32, Some(r)) => Tensor::from_le_bytes(DType::I32, &shape, r),
        (Dt::Int64, Some(r)) => Tensor::from_le_bytes(DType::I64, &shape, r),
        (Dt::Double, Some(r)) => {
            if r.len() != n * 8 {
                return Err(count_err(r.len() / 8));
            }
            let v = r
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
                .collect();
            Tensor::from_f32(&shape, v)
        }
        (Dt::Int16 | Dt::Uint16, Some(r)) => {
            if r.len() != n * 2 {
                return Err(count_err(r.len() / 2));
            }
            let signed = dt == Dt::Int16;
            let v: Vec<i32> = r
                .chunks_exact(2)
                .map(|c| {
                    if signed {
                        i32::from(i16::from_le_bytes([c[0], c[1]]))
                    } else {
                        i32::from(u16::from_le_bytes([c[0], c[1]]))
                    }
                })
                .collect();
            weft_core::tensor::array_from(&shape, v).map(Tensor::I32)
        }
        (Dt::Float, None) => {
            check(t.float_data.len(), n).map_err(count_err)?;
            Tensor::from_f32(&shape, t.float_data.clone())
        }
        (Dt::Double, None) => {
            check(t.double_data.len(), n).map_err(count_err)?;
            Tensor::from_f32(&shape, t.double_data.iter().map(|&v| v as f32).collect())
        }
        (Dt::Int64, None) => {
            check(t.int64_data.len(), n).map_err(count_err)?;
            Tensor::from_i64(&shape, t.int64_data.clone())
        }
        (Dt::Int32 | Dt::Int16 | Dt::Uint16, None) => {
            check(t.int32_data.len(), n).map_err(count_err)?;
            weft_core::tensor::array_from(&shape, t.int32_data.clone()).map(Tensor::I32)
        }
        (Dt::Int8, None) => {
            check(t.int32_data.len(), n).map_err(count_err)?;
            weft_core::tensor::array_from(&shape, t.int32_data.iter().map(|&v| v as i8).collect()).map(Tensor::I8)
        }
        (Dt::Uint8 | Dt::Bool, None) => {
            check(t.int32_data.len(), n).map_err(count_err)?;
            weft_core::tensor::array_from(&shape, t.int32_data.iter().map(|&v| v as u8).collect()).map(Tensor::U8)
        }
        (Dt::Float16, None) => {
            check(t.int32_data.len(), n).map_err(count_err)?;
            weft_core::tensor::array_from(&shape, t.int32_data.iter().map(|&v| f16::from_bits(v as u16)).collect())
                .map(Tensor::F16)
        }
        (other, _) => {
            return Err(bad(format!("data type {} is not supported", other.as_str_name())));
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
        raw_data: Some(t.to_le_bytes()),
        ..Default::default()
    }
}

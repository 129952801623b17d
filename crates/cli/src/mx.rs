//! `weft mx`: convert a tensor to an OCP MX format and back, so that weft's MX arithmetic
//! can be checked against other implementations.

use std::path::PathBuf;

use anyhow::{Context, bail};
use weft_core::mx::{MxFormat, MxTensor};
use weft_core::{DType, Tensor, npy};

#[derive(clap::Args, Debug)]
pub struct MxArgs {
    /// A float32 or float16 .npy tensor.
    pub input: PathBuf,
    /// mxint8, mxfp8_e4m3 (or mxfp8), mxfp8_e5m2, mxfp6_e3m2, mxfp6_e2m3 (or mxfp6),
    /// mxfp4_e2m1 (or mxfp4).
    #[arg(long)]
    pub format: String,
    /// The axis the 32-element blocks run along (negative counts from the end).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub axis: i64,
    /// Output .npy: the values the MX blocks stand for, as float32.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Also write the E8M0 scale codes (uint8; the input's shape with the axis's length
    /// replaced by its number of blocks; 255 is NaN).
    #[arg(long)]
    pub scales: Option<PathBuf>,
    /// Also write the element codes (uint8, the input's shape; the format's bit pattern in
    /// the low bits; MXINT8 as two's complement).
    #[arg(long)]
    pub elements: Option<PathBuf>,
}

pub fn mx(args: &MxArgs) -> anyhow::Result<()> {
    let Some(format) = MxFormat::parse(&args.format) else {
        let names: Vec<&str> = MxFormat::ALL.iter().map(|f| f.name()).collect();
        bail!(
            "--format {}: not an MX format (one of {}, or mxfp8, mxfp6, mxfp4)",
            args.format,
            names.join(", ")
        );
    };
    let t = npy::read(&args.input).with_context(|| format!("reading {}", args.input.display()))?;
    if !t.dtype().is_float() {
        bail!(
            "{}: holds {}; MX conversion takes float32 or float16",
            args.input.display(),
            t.dtype()
        );
    }
    let shape = t.shape().to_vec();
    let rank = shape.len() as i64;
    if rank == 0 {
        bail!("{}: a scalar has no axis to block along", args.input.display());
    }
    if args.axis < -rank || args.axis >= rank {
        bail!(
            "--axis {}: out of range for a tensor of rank {rank} (shape {shape:?})",
            args.axis
        );
    }
    let axis = args.axis.rem_euclid(rank) as usize;
    let data: Vec<f32> = t.to_f32().iter().copied().collect();
    let q = MxTensor::quantize(format, &shape, axis, &data);
    let out = Tensor::from_f32(&shape, q.dequantize())?;
    npy::write(&args.output, &out)?;
    if let Some(path) = &args.scales {
        let s = Tensor::from_le_bytes(DType::U8, &q.scales_shape(), &q.scales)?;
        npy::write(path, &s)?;
    }
    if let Some(path) = &args.elements {
        let e = Tensor::from_le_bytes(DType::U8, &shape, &q.codes)?;
        npy::write(path, &e)?;
    }
    Ok(())
}

//! `weft bench --fpga-model BOARD`: an analytical estimate (a model, not a measurement) of
//! the int8 plan on an FPGA board: per layer, the cycles of the `qconv` multiply arrays at
//! the plan's tile parameters, the bytes moved to and from external memory, and a roofline
//! time. The assumptions are listed in docs/FPGA.md.

use weft_core::mx::{MxFormat, blocks_along};
use weft_core::op::MxActivations;
use weft_core::{Graph, Op};

/// Significand bits of an MX element (the implicit bit included; MXINT8's whole 8 bits):
/// the width of the integer multiplier an MX product needs.
fn significand_bits(f: MxFormat) -> u32 {
    match f {
        MxFormat::Int8 => 8,
        MxFormat::Fp8E4M3 | MxFormat::Fp6E2M3 => 4,
        MxFormat::Fp8E5M2 | MxFormat::Fp6E3M2 => 3,
        MxFormat::Fp4E2M1 => 2,
    }
}

/// How many of an MX layer's element products one DSP does per cycle, relative to int8:
/// the multiplier's area shrinks with the product of the operand widths (8 x 8 = 64 for
/// int8), capped at 8x because the shifts that align each product to the block's exponent
/// and the adder tree do not shrink with it. f16 activations take the int8 rate.
pub fn mx_density(weights: MxFormat, acts: MxActivations) -> u32 {
    let a = match acts {
        MxActivations::Mx(f) => significand_bits(f),
        MxActivations::F16 => 11,
    };
    (64 / (significand_bits(weights) * a)).clamp(1, 8)
}

/// A board's resources as the model sees them.
#[derive(Clone, Debug, PartialEq)]
pub struct Board {
    pub name: String,
    pub dsps: u32,
    /// Share of the DSPs a compiled design can use for the multiply arrays.
    pub usable: f64,
    /// int8 multiply-accumulates one DSP block does per cycle.
    pub macs_per_dsp: u32,
    pub mhz: f64,
    /// External memory bandwidth, GB/s.
    pub gbps: f64,
    /// Fixed cost of each kernel launch, microseconds.
    pub launch_us: f64,
}

/// Named boards: published DSP counts and memory systems; clocks typical of OpenCL designs.
pub fn board(spec: &str) -> Result<Board, String> {
    let named = |name: &str, dsps, mhz, gbps| Board {
        name: name.to_string(),
        dsps,
        usable: 0.8,
        macs_per_dsp: 2,
        mhz,
        gbps,
        launch_us: 5.0,
    };
    match spec {
        // Intel Arria 10 GX 1150: 1,518 DSP blocks (two 18x19 multipliers each), 2 x DDR4-2133
        "arria10-gx1150" => Ok(named(spec, 1518, 250.0, 34.1)),
        // Intel Stratix 10 GX 2800: 5,760 DSP blocks, 4 x DDR4-2400
        "stratix10-gx2800" => Ok(named(spec, 5760, 350.0, 76.8)),
        // AMD Xilinx Alveo U250: 12,288 DSP48E2 slices, 4 x DDR4-2400
        "alveo-u250" => Ok(named(spec, 12288, 300.0, 77.0)),
        custom if custom.starts_with("custom:") => {
            let mut b = named("custom", 0, 0.0, 0.0);
            for kv in custom["custom:".len()..].split(',') {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| format!("--fpga-model custom: expected KEY=VALUE, got '{kv}'"))?;
                let x: f64 = v
                    .parse()
                    .ok()
                    .filter(|x: &f64| x.is_finite() && *x > 0.0)
                    .ok_or_else(|| format!("--fpga-model custom: {k} must be a positive number, got '{v}'"))?;
                match k {
                    "dsp" => b.dsps = x as u32,
                    "mhz" => b.mhz = x,
                    "gbps" => b.gbps = x,
                    "usable" if x <= 1.0 => b.usable = x,
                    "macs-per-dsp" => b.macs_per_dsp = x as u32,
                    "launch-us" => b.launch_us = x,
                    other => return Err(format!("--fpga-model custom: unknown key '{other}'")),
                }
            }
            if b.dsps == 0 || b.mhz == 0.0 || b.gbps == 0.0 || b.macs_per_dsp == 0 {
                return Err(
                    "--fpga-model custom: needs dsp, mhz and gbps (for example custom:dsp=3000,mhz=300,gbps=19.2)"
                        .into(),
                );
            }
            Ok(b)
        }
        other => Err(format!(
            "unknown board '{other}' (arria10-gx1150, stratix10-gx2800, alveo-u250, or custom:dsp=N,mhz=F,gbps=B[,usable=U,macs-per-dsp=K,launch-us=L])"
        )),
    }
}

/// One layer's estimate.
#[derive(Clone, Debug)]
pub struct LayerEstimate {
    pub node: String,
    pub shape: Vec<usize>,
    pub macs: u64,
    /// Useful MACs over the MACs the padded tiles execute.
    pub efficiency: f64,
    pub compute_us: f64,
    pub memory_us: f64,
    pub time_us: f64,
    /// MX layers: the element products a DSP does per cycle relative to int8.
    pub mx_density: Option<u32>,
}

/// The plan's tile: `tm` output channels x 16 pixels x 4 input channels per array cycle.
pub fn estimate(graph: &Graph, batch: usize, b: &Board, tm: usize) -> anyhow::Result<(Vec<LayerEstimate>, usize)> {
    let inferred = crate::bench::infer_at(graph, batch)?;
    let array = (tm * 16 * 4) as f64;
    let arrays = ((f64::from(b.dsps) * b.usable * f64::from(b.macs_per_dsp)) / array)
        .floor()
        .max(1.0);
    let mut out = vec![];
    for node in &graph.nodes {
        let (is_conv, group, mx) = match &node.op {
            Op::QConv(q) => (true, q.conv.group.max(1), None),
            Op::QGemm(_) => (true, 1, None),
            Op::MxConv(q) => (true, q.conv.group.max(1), Some((q.weights, q.activations))),
            Op::MxGemm(q) => (true, 1, Some((q.weights, q.activations))),
            _ => (false, 1, None),
        };
        if !is_conv {
            continue;
        }
        let density = mx.map(|(w, a)| mx_density(w, a));
        // MX layers: narrower multipliers, so more arrays from the same DSPs
        let arrays = match density {
            Some(d) => ((f64::from(b.dsps) * b.usable * f64::from(b.macs_per_dsp * d)) / array)
                .floor()
                .max(1.0),
            None => arrays,
        };
        let shape_of = |i: usize| {
            node.input(i)
                .and_then(|n| inferred.shape(n))
                .map(<[usize]>::to_vec)
                .unwrap_or_default()
        };
        let (xs, ws) = (shape_of(0), shape_of(1));
        let os = node
            .outputs
            .first()
            .and_then(|o| inferred.shape(o))
            .map(<[usize]>::to_vec)
            .unwrap_or_default();
        let n = xs.first().copied().unwrap_or(1);
        let (m, kh, kw, cg) = match ws.as_slice() {
            [m, cg, kh, kw] => (*m, *kh, *kw, *cg),
            [m, k] => (*m, 1, 1, *k),
            _ => continue,
        };
        let kpos = kh * kw;
        let ohw: usize = os.iter().skip(2).product::<usize>().max(1);
        let ow = os.get(3).copied().unwrap_or(1);
        let mg = m / group;
        let macs = (n * m * ohw * cg * kpos) as u64;
        // input channels the array reads per output pixel: 4 per block and kernel position, or
        // for a stem the plan folds, its kernel rows' column-channel pairs packed 4 to a word
        let k_padded =
            weft_opencl::stem_fold_words(group, cg, kw, ow).map_or(cg.div_ceil(4) * 4 * kpos, |words| kh * words * 4);
        let padded = (n * group * mg.div_ceil(tm) * tm * ohw.div_ceil(16) * 16 * k_padded) as f64;
        let cycles = padded / (array * arrays);
        let compute_us = cycles / b.mhz;
        let bytes = match mx {
            None => {
                (m * cg * kpos) as f64                            // weights
                + xs.iter().product::<usize>() as f64             // input, read once (line buffers)
                + (n * m * ohw) as f64                            // output
                + if node.inputs.len() > 5 { (n * m * ohw) as f64 } else { 0.0 } // residual
            }
            // MX: element codes at their width and one scale byte per block; the plan's
            // activations are f32 in and out
            Some((w, _)) => {
                (m * cg * kpos) as f64 * f64::from(w.bits()) / 8.0
                    + (m * blocks_along(cg) * kpos) as f64
                    + 4.0 * xs.iter().product::<usize>() as f64
                    + 4.0 * (n * m * ohw) as f64
            }
        };
        let memory_us = bytes / (b.gbps * 1e3);
        out.push(LayerEstimate {
            node: node.name.clone(),
            shape: os,
            macs,
            efficiency: macs as f64 / padded,
            compute_us,
            memory_us,
            time_us: compute_us.max(memory_us) + b.launch_us,
            mx_density: density,
        });
    }
    Ok((out, arrays as usize))
}

pub fn print(graph: &Graph, batch: usize, spec: &str, tm: usize) -> anyhow::Result<()> {
    let b = board(spec).map_err(anyhow::Error::msg)?;
    let (layers, arrays) = estimate(graph, batch, &b, tm)?;
    if layers.is_empty() {
        anyhow::bail!(
            "the package has no int8 or MX convolution or fully connected layers to model (compile with --precision int8 or an MX precision)"
        );
    }
    println!(
        "FPGA MODEL (an estimate, not a measurement; see docs/FPGA.md): {} — {} DSPs x {:.0}% usable x {} int8 MACs, {:.0} MHz, {:.1} GB/s",
        b.name,
        b.dsps,
        b.usable * 100.0,
        b.macs_per_dsp,
        b.mhz,
        b.gbps
    );
    println!(
        "plan tile: {tm} output channels x 16 pixels x 4 input channels = {} MACs/cycle per array, {arrays} arrays, peak {:.0} GOP/s",
        tm * 64,
        2.0 * (tm * 64 * arrays) as f64 * b.mhz / 1e3
    );
    // MX layers: the density most layers have, then the layers that differ (the input layers
    // take MXINT8 activations by default)
    let mut counts = std::collections::BTreeMap::<u32, usize>::new();
    for d in layers.iter().filter_map(|l| l.mx_density) {
        *counts.entry(d).or_default() += 1;
    }
    if let Some((&d, _)) = counts.iter().max_by_key(|(d, n)| (**n, **d)) {
        let others: Vec<String> = layers
            .iter()
            .filter_map(|l| l.mx_density.filter(|x| *x != d).map(|x| format!("{x}x at {}", l.node)))
            .collect();
        let others = if others.is_empty() {
            String::new()
        } else {
            format!("; {}", others.join(", "))
        };
        println!(
            "MX layers: {d}x the int8 products per DSP (narrower multipliers; docs/FPGA.md), weights at their element width{others}"
        );
    }
    println!(
        "{:<36} {:>20} {:>12} {:>6} {:>10} {:>10} {:>10} {:>7}",
        "layer", "shape", "MACs", "eff", "compute us", "memory us", "time us", "bound"
    );
    let (mut total_us, mut total_macs) = (0.0, 0u64);
    for l in &layers {
        println!(
            "{:<36} {:>20} {:>12} {:>5.0}% {:>10.1} {:>10.1} {:>10.1} {:>7}",
            l.node,
            format!("{:?}", l.shape),
            l.macs,
            l.efficiency * 100.0,
            l.compute_us,
            l.memory_us,
            l.time_us,
            if l.compute_us >= l.memory_us {
                "compute"
            } else {
                "memory"
            }
        );
        total_us += l.time_us;
        total_macs += l.macs;
    }
    println!(
        "total (model): {:.2} ms per batch of {batch}, {:.0} images/s, {:.0} GOP/s effective",
        total_us / 1e3,
        batch as f64 / (total_us / 1e6),
        2.0 * total_macs as f64 / (total_us / 1e6) / 1e9
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boards_parse_and_bad_specs_are_refused() {
        assert_eq!(board("alveo-u250").map(|b| b.dsps), Ok(12288));
        let c = board("custom:dsp=3000,mhz=300,gbps=19.2,usable=0.5");
        assert_eq!(c.map(|b| (b.dsps, b.usable)), Ok((3000, 0.5)));
        assert!(board("custom:dsp=3000").is_err());
        assert!(board("custom:dsp=-1,mhz=300,gbps=1").is_err());
        assert!(board("custom:dsp=1,mhz=300,gbps=1,warp=9").is_err());
        assert!(board("virtex-2").is_err());
    }

    #[test]
    fn mx_multipliers_are_denser_the_narrower_they_are() {
        let same = |f| mx_density(f, MxActivations::Mx(f));
        assert_eq!(same(MxFormat::Int8), 1);
        assert_eq!(same(MxFormat::Fp8E4M3), 4);
        assert_eq!(same(MxFormat::Fp6E3M2), 7);
        assert_eq!(same(MxFormat::Fp4E2M1), 8);
        assert_eq!(mx_density(MxFormat::Fp4E2M1, MxActivations::F16), 2);
        assert_eq!(mx_density(MxFormat::Fp8E4M3, MxActivations::Mx(MxFormat::Int8)), 2);
    }
}

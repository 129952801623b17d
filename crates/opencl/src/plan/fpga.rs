//! The FPGA variant's lowering (`KernelSet::Fpga`): every convolution, fully connected
//! layer, add, pooling and global mean of an int8 package becomes its own kernel
//! (`kernels/fpga/`), its geometry and constants compiled in as `W_*` macros, launched with
//! the kernels' required work-group size. Views and the graph input's quantization are as
//! in the generic lowering; the output edges' dequantization and anything else runs on the
//! host.

use weft_core::Op;

use super::conv::{ConvGeo, ConvShape};
use super::*;

/// Work-items per work-group of every FPGA-variant kernel: `W_WG`, its required size.
pub const FPGA_WG: usize = 16;

/// `n` rounded up to whole work-groups.
fn groups_of(n: usize) -> usize {
    n.max(1).div_ceil(FPGA_WG) * FPGA_WG
}

fn b(v: bool) -> i64 {
    i64::from(v)
}

fn u(v: usize) -> i64 {
    v as i64
}

impl Planner<'_> {
    /// Plans node `idx` as an FPGA-variant kernel; `false` when the generic lowering decides
    /// (views, the graph input's quantization).
    pub(super) fn fpga_node(&mut self, idx: usize, consts: &mut Consts) -> Result<bool, OpenClError> {
        let node = self.graph.nodes[idx].clone();
        let input = |i: usize| node.input(i).unwrap_or_default().to_string();
        let out = node.outputs.first().cloned().unwrap_or_default();
        let out_shape = self.shape(&out);
        match &node.op {
            Op::QConv(q) => {
                let g = q.conv.group.max(1);
                let cin = self.shape(&input(0)).get(1).copied().unwrap_or(0);
                if (g > 1 && (cin / g) % 4 != 0) || !self.requant_fits(&node) {
                    self.host(idx)?;
                    return Ok(true);
                }
                let xg = self.u8_on_device(&input(0), q.x_zero_point as u8)?;
                let ConvShape { m, cg, og, geo, .. } = self.qconv_shape(&node, &q.conv, xg)?;
                let residual = match q.residual_zero_point {
                    Some(zp) => {
                        if self.u8_on_device(&input(5), 0)? != og {
                            self.host(idx)?;
                            return Ok(true);
                        }
                        Some((input(5), input(6), zp))
                    }
                    None => None,
                };
                let slot = self.alloc(og.bytes());
                self.wconv(
                    idx,
                    consts,
                    xg,
                    og,
                    slot,
                    (m, cg, g),
                    geo,
                    q.x_zero_point,
                    &q.out,
                    residual,
                )?;
                self.bind(&out, Loc::U8 { slot, geom: og });
            }
            Op::QGemm(q) => {
                let on_device = matches!(self.loc.get(&input(0)), Some(Loc::U8 { .. }));
                if !(on_device || geom_of(&self.shape(&input(0))).is_some()) || !self.requant_fits(&node) {
                    self.host(idx)?;
                    return Ok(true);
                }
                let xg = self.u8_on_device(&input(0), q.x_zero_point as u8)?;
                let Some(ConvShape { m, cg, og, geo, .. }) = self.qgemm_shape(&node, xg)? else {
                    self.host(idx)?;
                    return Ok(true);
                };
                let slot = self.alloc(og.bytes());
                self.wconv(idx, consts, xg, og, slot, (m, cg, 1), geo, q.x_zero_point, &q.out, None)?;
                self.bind(&out, Loc::U8 { slot, geom: og });
            }
            Op::QAdd(q) => {
                let a = self.u8_on_device(&input(0), q.a_zero_point as u8)?;
                let bg = self.u8_on_device(&input(1), q.b_zero_point as u8)?;
                if a != bg || !(1..=62).contains(&q.shift) {
                    self.host(idx)?;
                    return Ok(true);
                }
                let slot = self.alloc(a.bytes());
                let bytes = a.bytes() / a.n.max(1);
                let defines = vec![
                    ("W_BYTES", u(bytes)),
                    ("W_AZP", i64::from(q.a_zero_point)),
                    ("W_BZP", i64::from(q.b_zero_point)),
                    ("W_MA", i64::from(q.a_multiplier)),
                    ("W_MBV", i64::from(q.b_multiplier)),
                    ("W_SHIFT", i64::from(q.shift)),
                    ("W_ZP", i64::from(q.out.zero_point)),
                    ("W_LO", i64::from(q.out.clamp[0])),
                    ("W_HI", i64::from(q.out.clamp[1])),
                ];
                let args = vec![
                    Arg::Slot(self.slot_of(&input(0))),
                    Arg::Slot(self.slot_of(&input(1))),
                    Arg::Slot(slot),
                ];
                self.bind(&out, Loc::U8 { slot, geom: a });
                self.layer_launch(
                    idx,
                    KernelKind::WAdd,
                    defines,
                    args,
                    [groups_of(bytes), 1, a.n],
                    0,
                    out_shape,
                );
            }
            Op::QMaxPool(pool) | Op::QAveragePool { pool, .. } => {
                let avg = match node.op {
                    Op::QAveragePool { zero_point, .. } => Some(zero_point),
                    _ => None,
                };
                let xg = self.u8_on_device(&input(0), avg.unwrap_or(0) as u8)?;
                let [wy, wx] = weft_core::shape::pool_windows(pool, xg.h, xg.w).map_err(OpenClError::Unsupported)?;
                let og = Geom {
                    n: xg.n,
                    c: xg.c,
                    h: wy.out,
                    w: wx.out,
                };
                let slot = self.alloc(og.bytes());
                let defines = vec![
                    ("W_CB", u(xg.cb())),
                    ("W_H", u(xg.h)),
                    ("W_W", u(xg.w)),
                    ("W_OH", u(og.h)),
                    ("W_OW", u(og.w)),
                    ("W_KH", u(pool.kernel_shape[0])),
                    ("W_KW", u(pool.kernel_shape[1])),
                    ("W_SY", u(pool.strides[0])),
                    ("W_SX", u(pool.strides[1])),
                    ("W_DY", u(pool.dilations[0])),
                    ("W_DX", u(pool.dilations[1])),
                    ("W_PT", u(wy.pad_begin)),
                    ("W_PL", u(wx.pad_begin)),
                    ("W_PB", u(wy.pad_end)),
                    ("W_PR", u(wx.pad_end)),
                    ("W_AVG", b(avg.is_some())),
                    ("W_INCLUDE", b(pool.count_include_pad)),
                    ("W_ZP", i64::from(avg.unwrap_or(0))),
                ];
                let args = vec![Arg::Slot(self.slot_of(&input(0))), Arg::Slot(slot)];
                self.bind(&out, Loc::U8 { slot, geom: og });
                let global = [groups_of(og.h * og.w), 1, og.n * og.cb()];
                self.layer_launch(
                    idx,
                    KernelKind::WPool,
                    defines,
                    args,
                    global,
                    0,
                    vec![og.n, og.c, og.h, og.w],
                );
            }
            Op::QMean(q) => {
                let s = self.shape(&input(0));
                let axes: Vec<usize> = match node.input(1).and_then(|a| self.graph.initializers.get(a)) {
                    Some(t) => t
                        .to_i64_vec()
                        .iter()
                        .filter_map(|&a| weft_core::shape::normalize_axis(a, s.len()))
                        .collect(),
                    None => (2..s.len()).collect(),
                };
                let mut sorted = axes;
                sorted.sort_unstable();
                if s.len() != 4 || sorted != [2, 3] || !(1..=62).contains(&q.shift) {
                    self.host(idx)?;
                    return Ok(true);
                }
                let xg = self.u8_on_device(&input(0), q.x_zero_point as u8)?;
                let og = Geom {
                    n: xg.n,
                    c: xg.c,
                    h: 1,
                    w: 1,
                };
                let slot = self.alloc(og.bytes());
                let defines = vec![
                    ("W_CB", u(xg.cb())),
                    ("W_HW", u(xg.h * xg.w)),
                    ("W_XZP", i64::from(q.x_zero_point)),
                    ("W_MULT", i64::from(q.multiplier)),
                    ("W_SHIFT", i64::from(q.shift)),
                    ("W_OZP", i64::from(q.out.zero_point)),
                    ("W_LO", i64::from(q.out.clamp[0])),
                    ("W_HI", i64::from(q.out.clamp[1])),
                ];
                let count = xg.n * xg.cb();
                let args = vec![Arg::Slot(self.slot_of(&input(0))), Arg::Slot(slot), int(count)];
                self.bind(&out, Loc::U8 { slot, geom: og });
                self.layer_launch(
                    idx,
                    KernelKind::WMean,
                    defines,
                    args,
                    [groups_of(count), 1, 1],
                    0,
                    out_shape,
                );
            }
            // the generic kernels are not part of the variant: float edges run on the host
            // (a graph input's Quantize is folded into its upload by the generic lowering)
            Op::Dequantize { .. } | Op::QConcat(_) => self.host(idx)?,
            Op::Quantize { .. } if matches!(self.loc.get(&input(0)), Some(Loc::F32 { .. })) => self.host(idx)?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// A convolution (or fully connected layer) as its own `wconv` kernel: the generic
    /// constants (`conv_consts`, 16 output channels per work-item) with every group's weights
    /// in one buffer (`#wall`) and the folded biases in one (`#ball`).
    #[allow(clippy::too_many_arguments)]
    fn wconv(
        &mut self,
        idx: usize,
        consts: &mut Consts,
        xg: Geom,
        og: Geom,
        slot: usize,
        (m, cg, group): (usize, usize, usize),
        geo: ConvGeo,
        zp_x: i32,
        out: &weft_core::op::QOut,
        residual: Option<(String, String, i32)>,
    ) -> Result<(), OpenClError> {
        let node = self.graph.nodes[idx].clone();
        let key = |what: &str| format!("{}#{what}", node.name);
        self.conv_consts(
            &node,
            consts,
            (m, cg, group),
            geo,
            zp_x,
            out,
            residual.as_ref(),
            QCONV_TM,
            false,
        )?;
        let mg = m / group;
        if !consts.contains_key(&key("wall")) {
            let mut wall = Vec::new();
            let mut ball = vec![0u8; consts.get(&key("b0")).map_or(0, Vec::len)];
            for gi in 0..group {
                wall.extend_from_slice(consts.get(&key(&format!("w{gi}"))).map_or(&[][..], Vec::as_slice));
                if let Some(bg) = consts.get(&key(&format!("b{gi}"))) {
                    let range = gi * mg * 4..(gi + 1) * mg * 4;
                    ball[range.clone()].copy_from_slice(&bg[range]);
                }
            }
            consts.insert(key("wall"), wall);
            consts.insert(key("ball"), ball);
        }
        let cbg = if group == 1 { xg.cb() } else { cg / 4 };
        let pad_word = u32::from(zp_x as u8) * 0x0101_0101;
        let defines = vec![
            ("W_CB", u(xg.cb())),
            ("W_H", u(xg.h)),
            ("W_W", u(xg.w)),
            ("W_G", u(group)),
            ("W_CBG", u(cbg)),
            ("W_MG", u(mg)),
            ("W_M", u(m)),
            ("W_OH", u(og.h)),
            ("W_OW", u(og.w)),
            ("W_KH", u(geo.kh)),
            ("W_KW", u(geo.kw)),
            ("W_SY", u(geo.strides[0])),
            ("W_SX", u(geo.strides[1])),
            ("W_DY", u(geo.dilations[0])),
            ("W_DX", u(geo.dilations[1])),
            ("W_PT", u(geo.pads[0])),
            ("W_PL", u(geo.pads[1])),
            ("W_PAD", i64::from(pad_word)),
            ("W_RES", b(residual.is_some())),
            ("W_LO", i64::from(out.clamp[0])),
            ("W_HI", i64::from(out.clamp[1])),
        ];
        let (res_arg, rmult_arg) = match &residual {
            Some((r, _, _)) => (Arg::Slot(self.slot_of(r)), Arg::Const(key("rmult"))),
            None => (Arg::Dummy, Arg::Dummy),
        };
        let args = vec![
            Arg::Slot(self.slot_of(&node.inputs[0])),
            Arg::Const(key("wall")),
            Arg::Const(key("ball")),
            Arg::Const(key("mult")),
            Arg::Const(key("shift")),
            Arg::Const(key("radd")),
            res_arg,
            rmult_arg,
            Arg::Slot(slot),
        ];
        let macs = (og.n * mg * og.h * og.w * cg * geo.kh * geo.kw) as u64;
        let global = [groups_of(og.h * og.w), 1, og.n * group * mg.div_ceil(16)];
        self.layer_launch(
            idx,
            KernelKind::WConv,
            defines,
            args,
            global,
            macs,
            vec![og.n, og.c, og.h, og.w],
        );
        Ok(())
    }

    /// A launch of node `idx`'s own kernel: the template's name and the node's index
    /// (`wconv_12`), the macros with the work-group size added.
    #[allow(clippy::too_many_arguments)]
    fn layer_launch(
        &mut self,
        idx: usize,
        template: KernelKind,
        mut defines: Vec<(&'static str, i64)>,
        args: Vec<Arg>,
        global: [usize; 3],
        macs: u64,
        shape: Vec<usize>,
    ) {
        defines.push(("W_WG", u(FPGA_WG)));
        self.steps.push(Step::Launch {
            node: self.graph.nodes[idx].name.clone(),
            kernel: template,
            args,
            global: global.map(|g| g.max(1)),
            local: Some([FPGA_WG, 1, 1]),
            macs,
            shape,
            side: false,
            layer: Some(Box::new(LayerKernel {
                template,
                name: format!("{}_{idx}", template.name()),
                defines,
            })),
        });
    }
}

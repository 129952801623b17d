//! Lowering of float packages (f32, and f16 storage with f32 arithmetic): convolutions,
//! fully connected layers, adds (with a following ReLU folded in), clamps, pooling and means
//! as float kernels; row-major storage, so reshapes are views.

use weft_core::Op;
use weft_core::shape::window;

use super::conv::ConvGeo;
use super::*;

/// Float packages: which nodes run as float kernels.
impl Planner<'_> {
    /// Float activations are stored as IEEE half (an f16 package).
    fn half(&self) -> bool {
        self.precision == Precision::F16
    }

    fn float_loc(&self, slot: usize) -> Loc {
        if self.half() {
            Loc::F16 { slot }
        } else {
            Loc::F32 { slot }
        }
    }

    fn float_bytes(&self, shape: &[usize]) -> usize {
        shape.iter().product::<usize>() * if self.half() { 2 } else { 4 }
    }

    /// The slot of a float value on the device, uploading it from the host when needed;
    /// `None` for constants and non-float values (the node then runs on the host).
    fn float_on_device(&mut self, value: &str) -> Option<usize> {
        match self.loc.get(value) {
            Some(Loc::F32 { slot } | Loc::F16 { slot }) => return Some(*slot),
            Some(Loc::U8 { .. }) => return None,
            _ => {}
        }
        if self.graph.initializers.contains_key(value) {
            return None;
        }
        let (dtype, shape) = self.shapes.values.get(value).cloned()?;
        if dtype != weft_core::DType::F32 || shape.is_empty() {
            return None;
        }
        let slot = self.alloc(self.float_bytes(&shape));
        self.steps.push(Step::UploadFloat {
            value: value.to_string(),
            slot,
            half: self.half(),
        });
        let loc = self.float_loc(slot);
        self.bind(value, loc);
        Some(slot)
    }

    fn is_float_value(&self, value: &str) -> bool {
        matches!(self.loc.get(value), Some(Loc::F32 { .. } | Loc::F16 { .. }))
            || (!self.graph.initializers.contains_key(value)
                && self
                    .shapes
                    .values
                    .get(value)
                    .is_some_and(|(d, s)| *d == weft_core::DType::F32 && !s.is_empty()))
    }

    fn const_f32(&self, name: Option<&str>) -> Option<Vec<f32>> {
        let t = self.graph.initializers.get(name?)?;
        matches!(t.dtype(), weft_core::DType::F32 | weft_core::DType::F16).then(|| t.to_f32().iter().copied().collect())
    }

    /// A scalar bound of a Clip: its constant input `i`, or `default` when absent.
    fn clip_bound(&self, node: &weft_core::Node, i: usize, default: f32) -> Option<f32> {
        match node.input(i) {
            None | Some("") => Some(default),
            Some(name) => {
                let v = self.const_f32(Some(name))?;
                (v.len() == 1).then(|| v[0])
            }
        }
    }

    /// Plans `node` as float kernels; `false` when it must run on the host.
    pub(super) fn float_node(&mut self, node: &weft_core::Node, consts: &mut Consts) -> Result<bool, OpenClError> {
        let h = self.half();
        let x = node.input(0).unwrap_or_default().to_string();
        let out = node.outputs.first().cloned().unwrap_or_default();
        let out_shape = self.shape(&out);
        let xs = self.shape(&x);
        if !self.is_float_value(&x) || out_shape.is_empty() {
            return Ok(false);
        }
        let key = |what: &str| format!("{}#{what}", node.name);
        match &node.op {
            Op::Conv(conv) if xs.len() == 4 => {
                let Some(wt) = node.input(1).and_then(|n| self.graph.initializers.get(n)) else {
                    return Ok(false);
                };
                let ws = wt.shape().to_vec();
                let (m, cg, kh, kw) = (ws[0], ws[1], ws[2], ws[3]);
                let g = conv.group.max(1);
                let bias = match node.input(2) {
                    None | Some("") => Some(vec![0f32; m]),
                    b => self.const_f32(b),
                };
                let Some(bias) = bias.filter(|b| b.len() == m) else {
                    return Ok(false);
                };
                let (lo, hi) = match conv.activation {
                    None => (f32::NEG_INFINITY, f32::INFINITY),
                    Some(weft_core::op::Activation::Relu) => (0.0, f32::INFINITY),
                    Some(weft_core::op::Activation::Clip { min, max }) => (min, max),
                };
                let wy = window(xs[2], kh, conv.strides[0], conv.dilations[0], &conv.padding, false, 0)
                    .map_err(OpenClError::Unsupported)?;
                let wx = window(xs[3], kw, conv.strides[1], conv.dilations[1], &conv.padding, false, 1)
                    .map_err(OpenClError::Unsupported)?;
                let geo = ConvGeo {
                    kh,
                    kw,
                    strides: conv.strides,
                    dilations: conv.dilations,
                    pads: [wy.pad_begin, wx.pad_begin],
                };
                if !consts.contains_key(&key("w0")) {
                    let w: Vec<f32> = wt.to_f32().iter().copied().collect();
                    let mg = m / g;
                    let per = mg * cg * kh * kw;
                    for gi in 0..g {
                        let p = crate::pack::pack_fconv(&w[gi * per..(gi + 1) * per], mg, cg, kh, kw);
                        consts.insert(key(&format!("w{gi}")), f32_bytes(&p));
                    }
                    consts.insert(key("b"), f32_bytes(&bias));
                }
                let Some(x_slot) = self.float_on_device(&x) else {
                    return Ok(false);
                };
                let slot = self.alloc(self.float_bytes(&out_shape));
                self.fconv_launches(
                    &node.name,
                    x_slot,
                    slot,
                    [xs[0], xs[1], xs[2], xs[3]],
                    [m, g, cg],
                    [wy.out, wx.out],
                    geo,
                    [lo, hi],
                );
                let loc = self.float_loc(slot);
                self.bind(&out, loc);
            }
            Op::Gemm(_) | Op::MatMul if xs.len() == 2 => {
                let Some(wt) = node.input(1).and_then(|n| self.graph.initializers.get(n)) else {
                    return Ok(false);
                };
                if wt.shape().len() != 2 {
                    return Ok(false);
                }
                let (alpha, beta, trans_a, trans_b) = match &node.op {
                    Op::Gemm(g) => (g.alpha, g.beta, g.trans_a, g.trans_b),
                    _ => (1.0, 1.0, false, false),
                };
                let k = xs[1];
                let (wk, m) = if trans_b {
                    (wt.shape()[1], wt.shape()[0])
                } else {
                    (wt.shape()[0], wt.shape()[1])
                };
                if trans_a || wk != k || out_shape != [xs[0], m] {
                    return Ok(false);
                }
                let bias = match (&node.op, node.input(2)) {
                    (Op::Gemm(_), Some(b)) if !b.is_empty() => {
                        self.const_f32(Some(b)).filter(|v| v.len() == m || v.len() == 1)
                    }
                    _ => Some(vec![0.0]),
                };
                let Some(bias) = bias else { return Ok(false) };
                if !consts.contains_key(&key("w0")) {
                    let w = wt.to_f32();
                    // [M, K] row-major, scaled by alpha
                    let mut mk = vec![0f32; m * k];
                    for mo in 0..m {
                        for ki in 0..k {
                            let v = if trans_b { w[[mo, ki]] } else { w[[ki, mo]] };
                            mk[mo * k + ki] = if alpha == 1.0 { v } else { alpha * v };
                        }
                    }
                    consts.insert(key("w0"), f32_bytes(&crate::pack::pack_fconv(&mk, m, k, 1, 1)));
                    let b: Vec<f32> = (0..m)
                        .map(|i| {
                            let v = if bias.len() == 1 { bias[0] } else { bias[i] };
                            if beta == 1.0 { v } else { beta * v }
                        })
                        .collect();
                    consts.insert(key("b"), f32_bytes(&b));
                }
                let Some(x_slot) = self.float_on_device(&x) else {
                    return Ok(false);
                };
                let slot = self.alloc(self.float_bytes(&out_shape));
                let geo = ConvGeo {
                    kh: 1,
                    kw: 1,
                    strides: [1, 1],
                    dilations: [1, 1],
                    pads: [0, 0],
                };
                let inf = f32::INFINITY;
                self.fconv_launches(
                    &node.name,
                    x_slot,
                    slot,
                    [xs[0], k, 1, 1],
                    [m, 1, k],
                    [1, 1],
                    geo,
                    [-inf, inf],
                );
                let loc = self.float_loc(slot);
                self.bind(&out, loc);
            }
            Op::Add => {
                let b = node.input(1).unwrap_or_default().to_string();
                if !self.is_float_value(&b) || self.shape(&b) != xs || out_shape != xs {
                    return Ok(false);
                }
                let (Some(a_slot), Some(b_slot)) = (self.float_on_device(&x), self.float_on_device(&b)) else {
                    return Ok(false);
                };
                let slot = self.alloc(self.float_bytes(&out_shape));
                let n = out_shape.iter().product();
                let args = vec![
                    Arg::Slot(a_slot),
                    Arg::Slot(b_slot),
                    Arg::Slot(slot),
                    Arg::F32(f32::NEG_INFINITY),
                    Arg::F32(f32::INFINITY),
                ];
                let loc = self.float_loc(slot);
                self.bind(&out, loc);
                self.launch(&node.name, KernelKind::FAdd(h), args, [n, 1, 1], 0, out_shape);
            }
            Op::Relu | Op::Clip => {
                let bounds = match node.op {
                    Op::Relu => Some((0.0, f32::INFINITY)),
                    _ => self
                        .clip_bound(node, 1, f32::NEG_INFINITY)
                        .zip(self.clip_bound(node, 2, f32::INFINITY)),
                };
                let Some((lo, hi)) = bounds else { return Ok(false) };
                if matches!(node.op, Op::Relu) && self.fuse_relu(&x, &out, &node.name) {
                    return Ok(true);
                }
                let Some(x_slot) = self.float_on_device(&x) else {
                    return Ok(false);
                };
                let slot = self.alloc(self.float_bytes(&out_shape));
                let n = out_shape.iter().product();
                let args = vec![Arg::Slot(x_slot), Arg::Slot(slot), Arg::F32(lo), Arg::F32(hi)];
                let loc = self.float_loc(slot);
                self.bind(&out, loc);
                self.launch(&node.name, KernelKind::FClamp(h), args, [n, 1, 1], 0, out_shape);
            }
            Op::MaxPool(pool) | Op::AveragePool(pool) if xs.len() == 4 && node.outputs.len() == 1 => {
                let [wy, wx] = weft_core::shape::pool_windows(pool, xs[2], xs[3]).map_err(OpenClError::Unsupported)?;
                let Some(x_slot) = self.float_on_device(&x) else {
                    return Ok(false);
                };
                let slot = self.alloc(self.float_bytes(&out_shape));
                let mut args = vec![Arg::Slot(x_slot), Arg::Slot(slot), int(xs[2]), int(xs[3])];
                args.extend(pool_window_args(pool, &wy, &wx, matches!(node.op, Op::AveragePool(_))));
                let loc = self.float_loc(slot);
                self.bind(&out, loc);
                self.launch(
                    &node.name,
                    KernelKind::FPool(h),
                    args,
                    [wx.out, wy.out, xs[0] * xs[1]],
                    0,
                    out_shape,
                );
            }
            Op::GlobalAveragePool | Op::ReduceMean { .. } if xs.len() == 4 => {
                if let Op::ReduceMean { .. } = node.op {
                    let axes: Option<Vec<usize>> = match node.input(1) {
                        None | Some("") => Some(vec![]),
                        Some(a) => self.graph.initializers.get(a).map(|t| {
                            t.to_i64_vec()
                                .iter()
                                .filter_map(|&a| weft_core::shape::normalize_axis(a, 4))
                                .collect()
                        }),
                    };
                    let mut axes = axes.unwrap_or_default();
                    axes.sort_unstable();
                    if axes != [2, 3] {
                        return Ok(false);
                    }
                }
                let Some(x_slot) = self.float_on_device(&x) else {
                    return Ok(false);
                };
                let slot = self.alloc(self.float_bytes(&out_shape));
                let args = vec![Arg::Slot(x_slot), Arg::Slot(slot), int(xs[2] * xs[3])];
                let loc = self.float_loc(slot);
                self.bind(&out, loc);
                self.launch(
                    &node.name,
                    KernelKind::FMean(h),
                    args,
                    [xs[0] * xs[1], 1, 1],
                    0,
                    out_shape,
                );
            }
            Op::MxConv(q) if xs.len() == 4 => {
                return self.mx_layer(node, consts, q.weights, q.activations, &q.conv, q.conv.activation);
            }
            Op::MxGemm(q) if xs.len() == 2 => {
                let conv = weft_core::op::Conv::default();
                return self.mx_layer(node, consts, q.weights, q.activations, &conv, q.activation);
            }
            Op::Flatten { .. } | Op::Reshape { .. } | Op::Squeeze | Op::Unsqueeze | Op::Identity => {
                // row-major storage: every reshape is a view
                let Some(loc @ (Loc::F32 { .. } | Loc::F16 { .. })) = self.loc.get(&x).cloned() else {
                    return Ok(false);
                };
                if out_shape.iter().product::<usize>() != xs.iter().product::<usize>() {
                    return Ok(false);
                }
                self.bind(&out, loc);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Folds a ReLU into the elementwise add just launched that produced `x`, when `x` has
    /// no other reader. (Exact in f16 too: rounding commutes with ReLU.)
    fn fuse_relu(&mut self, x: &str, out: &str, relu: &str) -> bool {
        if self.uses.get(x) != Some(&1) || self.outputs.contains(x) {
            return false;
        }
        let Some(loc) = self.loc.get(x).cloned() else {
            return false;
        };
        let x_slot = self.slot_of(x);
        let Some(Step::Launch { node, kernel, args, .. }) = self.steps.last_mut() else {
            return false;
        };
        if !matches!(kernel, KernelKind::FAdd(_)) || args.get(2) != Some(&Arg::Slot(x_slot)) {
            return false;
        }
        args[3] = Arg::F32(0.0);
        node.push('+');
        node.push_str(relu);
        self.bind(out, loc);
        true
    }

    #[allow(clippy::too_many_arguments)]
    fn fconv_launches(
        &mut self,
        node: &str,
        x_slot: usize,
        slot: usize,
        [n, c, ih, iw]: [usize; 4],
        [m, group, cg]: [usize; 3],
        [oh, ow]: [usize; 2],
        geo: ConvGeo,
        [lo, hi]: [f32; 2],
    ) {
        let mg = m / group;
        let tp = 8;
        for gi in 0..group {
            let mut args = vec![
                Arg::Slot(x_slot),
                Arg::Const(format!("{node}#w{gi}")),
                Arg::Const(format!("{node}#b")),
                Arg::Slot(slot),
                int(c),
                int(ih),
                int(iw),
                int(gi * cg),
                int(cg),
                int(mg),
                int(gi * mg),
                int(m),
                int(oh),
                int(ow),
            ];
            args.extend(geo.args());
            args.extend([Arg::F32(lo), Arg::F32(hi)]);
            let macs = (n * mg * oh * ow * cg * geo.kh * geo.kw) as u64;
            self.launch(
                node,
                KernelKind::FConv(self.half()),
                args,
                [ow.div_ceil(tp), oh, n * mg.div_ceil(16)],
                macs,
                vec![n, m, oh, ow],
            );
        }
    }
}

impl Planner<'_> {
    /// An MX convolution or fully connected layer (`kernels/mx.cl`): the activations
    /// converted into a scratch pair (step counts, block exponents), then one output per
    /// work-item. f16 activations stay on the host.
    fn mx_layer(
        &mut self,
        node: &weft_core::Node,
        consts: &mut Consts,
        format: weft_core::mx::MxFormat,
        acts: weft_core::op::MxActivations,
        conv: &weft_core::op::Conv,
        activation: Option<weft_core::op::Activation>,
    ) -> Result<bool, OpenClError> {
        use weft_core::mx::blocks_along;
        use weft_reference::mx::{Path, device_weights, path};
        let weft_core::op::MxActivations::Mx(af) = acts else {
            return Ok(false);
        };
        if self.half() {
            return Ok(false);
        }
        let x = node.input(0).unwrap_or_default().to_string();
        let out = node.outputs.first().cloned().unwrap_or_default();
        let out_shape = self.shape(&out);
        let mut xs = self.shape(&x);
        if xs.len() == 2 {
            xs.extend([1, 1]);
        }
        let (Some(codes), Some(scales)) = (
            node.input(1).and_then(|n| self.graph.initializers.get(n)),
            node.input(2).and_then(|n| self.graph.initializers.get(n)),
        ) else {
            return Ok(false);
        };
        let ws = codes.shape().to_vec();
        let (m, cg) = (ws[0], ws[1]);
        let (kh, kw) = if ws.len() == 4 { (ws[2], ws[3]) } else { (1, 1) };
        let g = conv.group.max(1);
        let (n, c, h, w) = (xs[0], xs[1], xs[2], xs[3]);
        if c != cg * g || m % g != 0 {
            return Ok(false);
        }
        let bias = match node.input(3) {
            None => Some(vec![0f32; m]),
            b => self.const_f32(b),
        };
        let Some(bias) = bias.filter(|b| b.len() == m) else {
            return Ok(false);
        };
        let key = |what: &str| format!("{}#{what}", node.name);
        let path = path(format, acts);
        if !consts.contains_key(&key("mxw")) {
            let (steps, exps) = device_weights(node, format, codes, scales, path)?;
            consts.insert(key("mxw"), i32_bytes(&steps));
            consts.insert(key("mxe"), i32_bytes(&exps));
            consts.insert(key("b"), f32_bytes(&bias));
        }
        let wy = window(h, kh, conv.strides[0], conv.dilations[0], &conv.padding, false, 0)
            .map_err(OpenClError::Unsupported)?;
        let wx = window(w, kw, conv.strides[1], conv.dilations[1], &conv.padding, false, 1)
            .map_err(OpenClError::Unsupported)?;
        let Some(x_slot) = self.float_on_device(&x) else {
            return Ok(false);
        };
        let nbg = blocks_along(cg);
        let steps_slot = self.alloc(n * h * w * c * 4);
        let exps_slot = self.alloc(n * h * w * g * nbg * 4);
        let int = |v: usize| Arg::I32(v as i32);
        let act_args = vec![
            Arg::Slot(x_slot),
            Arg::Slot(steps_slot),
            Arg::Slot(exps_slot),
            int(c),
            int(h * w),
            int(cg),
            int(nbg),
            Arg::I32(af.emin()),
            Arg::I32(af.mbits()),
            Arg::I32(af.emax()),
            Arg::I32(af.quantum()),
            Arg::U32(af.max_steps() as u32),
            Arg::I32(i32::from(path == Path::F32)),
        ];
        self.launch(
            &node.name,
            KernelKind::MxAct,
            act_args,
            [n * h * w, g * nbg, 1],
            0,
            xs.clone(),
        );
        let slot = self.alloc(self.float_bytes(&out_shape));
        let (oh, ow) = (wy.out, wx.out);
        let (act_kind, lo, hi) = match activation {
            None => (0, f32::NEG_INFINITY, f32::INFINITY),
            Some(weft_core::op::Activation::Relu) => (1, 0.0, f32::INFINITY),
            Some(weft_core::op::Activation::Clip { min, max }) => (1, min, max),
        };
        let path_arg = match path {
            Path::I32 => 0,
            Path::I64 => 1,
            Path::F32 => 2,
        };
        let args = vec![
            Arg::Slot(steps_slot),
            Arg::Slot(exps_slot),
            Arg::Const(key("mxw")),
            Arg::Const(key("mxe")),
            Arg::Const(key("b")),
            Arg::Slot(slot),
            int(c),
            int(h),
            int(w),
            int(cg),
            int(m),
            int(m / g),
            int(oh),
            int(ow),
            int(kh),
            int(kw),
            int(conv.strides[0]),
            int(conv.strides[1]),
            int(conv.dilations[0]),
            int(conv.dilations[1]),
            int(wy.pad_begin),
            int(wx.pad_begin),
            Arg::I32(path_arg),
            Arg::I32(act_kind),
            Arg::F32(lo),
            Arg::F32(hi),
        ];
        let macs = (n * m * oh * ow * cg * kh * kw) as u64;
        self.launch(&node.name, KernelKind::MxConv, args, [ow, oh, n * m], macs, out_shape);
        self.slots.release_scratch(steps_slot);
        self.slots.release_scratch(exps_slot);
        let loc = self.float_loc(slot);
        self.bind(&out, loc);
        Ok(true)
    }
}

fn i32_bytes(v: &[i32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::super::testing;
    use super::*;

    /// A float resnet runs wholly as float kernels: one convolution launch per Conv and Gemm,
    /// each residual Add's ReLU folded into its add, activations f16 in an f16 package.
    #[test]
    fn float_resnets_run_as_float_kernels_with_relus_folded() {
        for precision in [Precision::F32, Precision::F16] {
            let half = precision == Precision::F16;
            let g = testing::zoo("resnet8", precision);
            let p = plan(&g, 2, &mut Consts::new(), precision, testing::target()).unwrap();
            assert!(
                testing::host_nodes(&p, &g).is_empty(),
                "{:?}",
                testing::host_nodes(&p, &g)
            );
            let l = testing::launches(&p);
            let convs = g
                .nodes
                .iter()
                .filter(|n| matches!(n.op, Op::Conv(_) | Op::Gemm(_) | Op::MatMul))
                .count();
            assert_eq!(l.iter().filter(|x| x.1 == KernelKind::FConv(half)).count(), convs);
            assert!(l.iter().all(|x| KernelKind::for_precision(precision).contains(&x.1)));
            let adds: Vec<_> = l.iter().filter(|x| x.1 == KernelKind::FAdd(half)).collect();
            assert!(!adds.is_empty());
            for a in &adds {
                assert!(a.0.contains('+'), "{}: ReLU not folded", a.0);
                assert_eq!(a.2[3], Arg::F32(0.0));
            }
            assert!(
                !l.iter().any(|x| x.1 == KernelKind::FClamp(half)),
                "a stand-alone clamp was left"
            );
            for s in &p.steps {
                if let Step::UploadFloat { half: h, .. } = s {
                    assert_eq!(*h, half);
                }
            }
        }
    }

    /// In an int8 package float nodes are not lowered to float kernels.
    #[test]
    fn int8_packages_launch_no_float_kernel() {
        let g = testing::resnet8_int8();
        let p = plan(&g, 1, &mut Consts::new(), Precision::Int8, testing::target()).unwrap();
        let int8 = KernelKind::for_precision(Precision::Int8);
        assert!(testing::launches(&p).iter().all(|x| int8.contains(&x.1)));
    }
}

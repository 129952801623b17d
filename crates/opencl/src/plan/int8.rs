//! Lowering of the integer graph's nodes: quantize and dequantize edges, residual-free
//! elementwise adds, pooling, global means, views of u8 values, and convolutions and fully
//! connected layers (handed to `conv`); everything else runs on the host.

use weft_core::Op;

use super::conv::ConvShape;
use super::*;

impl Planner<'_> {
    pub(super) fn node(&mut self, idx: usize, consts: &mut Consts) -> Result<(), OpenClError> {
        let node = self.graph.nodes[idx].clone();
        let input = |i: usize| node.input(i).unwrap_or_default().to_string();
        let out = node.outputs.first().cloned().unwrap_or_default();
        let out_shape = self.shape(&out);
        let c = |name: &str| self.graph.initializers.get(name);
        if self.precision != Precision::Int8 && self.float_node(&node, consts)? {
            return Ok(());
        }
        if self.fpga && self.fpga_node(idx, consts)? {
            return Ok(());
        }
        match &node.op {
            Op::Quantize { scale, zero_point } if geom_of(&self.shape(&input(0))).is_some() => {
                let x = input(0);
                let s = self.shape(&x);
                let geom = geom_of(&s).unwrap_or(Geom { n: 0, c: 0, h: 0, w: 0 });
                let Some(Loc::F32 { slot: in_slot }) = self.loc.get(&x).cloned() else {
                    // a float on the host (a graph input): quantized on the host as it is
                    // laid out for the upload, a quarter of the bytes of its floats
                    let slot = self.alloc(geom.bytes());
                    self.steps.push(Step::UploadQuantized {
                        value: x.clone(),
                        slot,
                        geom,
                        scale: *scale,
                        zero_point: *zero_point,
                    });
                    self.bind(&out, Loc::U8 { slot, geom });
                    return Ok(());
                };
                let slot = self.alloc(geom.bytes());
                self.bind(&out, Loc::U8 { slot, geom });
                let args = edge_args(in_slot, slot, geom, *scale, *zero_point);
                self.launch(
                    &node.name,
                    KernelKind::Quantize,
                    args,
                    [1, geom.h, geom.n * geom.cb()],
                    0,
                    out_shape,
                );
            }
            Op::QConcat(q)
                if weft_core::shape::normalize_axis(q.axis, out_shape.len()) == Some(1)
                    && geom_of(&out_shape).is_some()
                    && node.inputs.iter().all(|i| {
                        let s = self.shape(i);
                        s.len() == out_shape.len() && s.get(1).is_some_and(|&c| c > 0)
                    }) =>
            {
                self.concat(&node, q, &out, out_shape)?;
            }
            Op::QConv(q) if self.is_depthwise(&node, q) => {
                if !self.requant_fits(&node) {
                    return self.host(idx);
                }
                let xg = self.u8_on_device(&input(0), q.x_zero_point as u8)?;
                self.depthwise_launch(&node, consts, xg, q)?;
            }
            Op::QConv(q)
                if q.conv.group == 1
                    || (q.conv.group > 1
                        && (self.shape(&input(0)).get(1).copied().unwrap_or(1) / q.conv.group) % 4 == 0) =>
            {
                if !self.requant_fits(&node) {
                    return self.host(idx);
                }
                let xg = self.u8_on_device(&input(0), q.x_zero_point as u8)?;
                let ConvShape {
                    m,
                    cg,
                    group: g,
                    og,
                    geo,
                } = self.qconv_shape(&node, &q.conv, xg)?;
                if !self.channel_form(g) && og.h * og.w + 16 > QCONV_MAX_PIXELS {
                    // the lane form finds a lane's row with a float division, exact below the limit
                    return self.host(idx);
                }
                let res = if q.residual_zero_point.is_some() {
                    Some(self.u8_on_device(&input(5), 0)?)
                } else {
                    None
                };
                // The output overwrites the residual in place where this is the residual's
                // last reader: each work-item reads the residual words it then writes, and
                // the lines are in cache already (no write-allocate misses).
                let in_place = match (res, self.loc.get(&input(5))) {
                    (Some(rg), Some(Loc::U8 { slot, .. }))
                        if rg == og
                            && self.last_use.get(&input(5)) == Some(&idx)
                            && !self.outputs.contains(&input(5))
                            && self.slots.users(*slot) == 1
                            && input(5) != input(0) =>
                    {
                        Some(*slot)
                    }
                    _ => None,
                };
                let slot = match in_place {
                    Some(s) => s,
                    None => self.alloc(og.bytes()),
                };
                self.conv_launches(
                    &node,
                    consts,
                    xg,
                    og,
                    slot,
                    (m, cg, g),
                    geo,
                    q.x_zero_point,
                    &q.out,
                    res.map(|_| (input(5), input(6), q.residual_zero_point.unwrap_or(0))),
                )?;
                self.bind(&out, Loc::U8 { slot, geom: og });
            }
            Op::QGemm(q)
                if matches!(self.loc.get(&input(0)), Some(Loc::U8 { .. }))
                    || geom_of(&self.shape(&input(0))).is_some() =>
            {
                if !self.requant_fits(&node) {
                    return self.host(idx);
                }
                let xg = self.u8_on_device(&input(0), q.x_zero_point as u8)?;
                let Some(ConvShape { m, cg, og, geo, .. }) = self.qgemm_shape(&node, xg)? else {
                    return self.host(idx);
                };
                let slot = self.alloc(og.bytes());
                self.conv_launches(
                    &node,
                    consts,
                    xg,
                    og,
                    slot,
                    (m, cg, 1),
                    geo,
                    q.x_zero_point,
                    &q.out,
                    None,
                )?;
                self.bind(&out, Loc::U8 { slot, geom: og });
            }
            Op::QAdd(q) => {
                let a = self.u8_on_device(&input(0), q.a_zero_point as u8)?;
                let b = self.u8_on_device(&input(1), q.b_zero_point as u8)?;
                if a != b {
                    return self.host(idx);
                }
                let slot = self.alloc(a.bytes());
                let args = vec![
                    Arg::Slot(self.slot_of(&input(0))),
                    Arg::Slot(self.slot_of(&input(1))),
                    Arg::Slot(slot),
                    Arg::I32(q.a_zero_point),
                    Arg::I32(q.b_zero_point),
                    Arg::I32(q.a_multiplier),
                    Arg::I32(q.b_multiplier),
                    Arg::I32(q.shift),
                    Arg::I32(q.out.zero_point),
                    Arg::I32(q.out.clamp[0]),
                    Arg::I32(q.out.clamp[1]),
                ];
                self.bind(&out, Loc::U8 { slot, geom: a });
                self.launch(&node.name, KernelKind::QAdd, args, [a.bytes(), 1, 1], 0, out_shape);
            }
            Op::QMaxPool(pool) => self.pool(&node, pool, None, consts)?,
            Op::QAveragePool { pool, zero_point } => self.pool(&node, pool, Some(*zero_point), consts)?,
            Op::QMean(q) => {
                let s = self.shape(&input(0));
                let axes: Vec<usize> = match node.input(1).and_then(c) {
                    Some(t) => t
                        .to_i64_vec()
                        .iter()
                        .filter_map(|&a| weft_core::shape::normalize_axis(a, s.len()))
                        .collect(),
                    None => (2..s.len()).collect(),
                };
                let mut sorted = axes.clone();
                sorted.sort_unstable();
                if s.len() != 4 || sorted != vec![2, 3] {
                    return self.host(idx);
                }
                let xg = self.u8_on_device(&input(0), q.x_zero_point as u8)?;
                let og = Geom {
                    n: xg.n,
                    c: xg.c,
                    h: 1,
                    w: 1,
                };
                let slot = self.alloc(og.bytes());
                let args = vec![
                    Arg::Slot(self.slot_of(&input(0))),
                    Arg::Slot(slot),
                    int(xg.cb()),
                    int(xg.h),
                    int(xg.w),
                    Arg::I32(q.x_zero_point),
                    Arg::I32(q.multiplier),
                    Arg::I32(q.shift),
                    Arg::I32(q.out.zero_point),
                    Arg::I32(q.out.clamp[0]),
                    Arg::I32(q.out.clamp[1]),
                ];
                self.bind(&out, Loc::U8 { slot, geom: og });
                self.launch(
                    &node.name,
                    KernelKind::QMean,
                    args,
                    [xg.n * xg.cb(), 1, 1],
                    0,
                    out_shape,
                );
            }
            Op::Flatten { .. } | Op::Reshape { .. } | Op::Squeeze | Op::Unsqueeze | Op::Identity
                if matches!(self.loc.get(&input(0)), Some(Loc::U8 { .. })) =>
            {
                let Some(Loc::U8 { slot, geom }) = self.loc.get(&input(0)).cloned() else {
                    return self.host(idx);
                };
                // A view when the output keeps the batch and flattens (C, H, W) in order.
                let keeps = out_shape.first() == Some(&geom.n)
                    && out_shape.iter().skip(1).product::<usize>() == geom.c * geom.h * geom.w;
                let spatial_one = geom.h == 1 && geom.w == 1;
                let flat =
                    out_shape.len() == 2 || (out_shape.len() == 4 && out_shape[1] == geom.c && out_shape[2] == geom.h);
                if keeps && (flat || spatial_one) {
                    self.bind(&out, Loc::U8 { slot, geom });
                } else {
                    return self.host(idx);
                }
            }
            // a graph output that no later node reads is dequantized on the host after a u8
            // download (a quarter of the bytes, and no launch)
            Op::Dequantize { .. } if self.outputs.contains(&out) && !self.last_use.contains_key(&out) => {
                return self.host(idx);
            }
            Op::Dequantize { scale, zero_point } if matches!(self.loc.get(&input(0)), Some(Loc::U8 { .. })) => {
                let Some(Loc::U8 { slot: in_slot, geom }) = self.loc.get(&input(0)).cloned() else {
                    return self.host(idx);
                };
                let slot = self.alloc(geom.n * geom.c * geom.h * geom.w * 4);
                self.bind(&out, Loc::F32 { slot });
                let args = edge_args(in_slot, slot, geom, *scale, *zero_point);
                self.launch(
                    &node.name,
                    KernelKind::Dequantize,
                    args,
                    [geom.w, geom.h, geom.n * geom.c],
                    0,
                    out_shape,
                );
            }
            _ => return self.host(idx),
        }
        Ok(())
    }

    /// Whether `qconv`'s folded requantization is exact for this node: shifts 1..=52 and
    /// residual multipliers of at most 2^52 keep every sum inside 63 bits (else the node runs
    /// on the host).
    /// A channel concatenation: one `qconcat` launch per input, each writing (requantized)
    /// its slice of the output's channels.
    fn concat(
        &mut self,
        node: &weft_core::Node,
        q: &weft_core::op::QConcat,
        out: &str,
        out_shape: Vec<usize>,
    ) -> Result<(), OpenClError> {
        let og =
            geom_of(&out_shape).ok_or_else(|| OpenClError::Unsupported(format!("{}: not 2-D or 4-D", node.name)))?;
        let slot = self.alloc(og.bytes());
        let mut off = 0;
        for (i, (name, &[zp, mult, shift])) in node.inputs.iter().zip(&q.inputs).enumerate() {
            let xg = self.u8_on_device(name, zp as u8)?;
            let last = i + 1 == node.inputs.len();
            let first_block = off / 4;
            let end_block = if last { og.cb() } else { (off + xg.c).div_ceil(4) };
            let args = vec![
                Arg::Slot(self.slot_of(name)),
                Arg::Slot(slot),
                int(xg.c),
                int(xg.cb()),
                int(og.c),
                int(og.cb()),
                int(og.h * og.w),
                int(off),
                Arg::I32(zp),
                Arg::I32(mult),
                Arg::I32(shift),
                Arg::I32(q.zero_point),
                Arg::I32(i32::from(last)),
            ];
            self.launch(
                &node.name,
                KernelKind::QConcat,
                args,
                [og.h * og.w, end_block - first_block, og.n],
                0,
                out_shape.clone(),
            );
            off += xg.c;
        }
        self.bind(out, Loc::U8 { slot, geom: og });
        Ok(())
    }

    pub(super) fn requant_fits(&self, node: &weft_core::Node) -> bool {
        let g = self.graph;
        let constant = |i: usize| node.input(i).and_then(|n| g.initializers.get(n));
        let shifts_ok = constant(4).is_some_and(|t| t.to_i64_vec().iter().all(|s| (1..=52).contains(s)));
        let rmult_ok = match node.input(6).filter(|n| !n.is_empty()) {
            None => true,
            Some(_) => constant(6).is_some_and(|t| t.to_i64_vec().iter().all(|v| v.unsigned_abs() <= 1 << 52)),
        };
        shifts_ok && rmult_ok
    }

    fn pool(
        &mut self,
        node: &weft_core::Node,
        pool: &Pool,
        avg_zp: Option<i32>,
        _consts: &mut Consts,
    ) -> Result<(), OpenClError> {
        let x = node.inputs[0].clone();
        let xg = self.u8_on_device(&x, avg_zp.unwrap_or(0) as u8)?;
        let [wy, wx] = weft_core::shape::pool_windows(pool, xg.h, xg.w).map_err(OpenClError::Unsupported)?;
        let og = Geom {
            n: xg.n,
            c: xg.c,
            h: wy.out,
            w: wx.out,
        };
        let slot = self.alloc(og.bytes());
        let out = node.outputs[0].clone();
        if avg_zp.is_none() {
            let x_slot = self.slot_of(&x);
            let mut args = vec![Arg::Slot(x_slot), Arg::Slot(slot), int(xg.cb()), int(xg.h), int(xg.w)];
            args.extend(pool_window_args(pool, &wy, &wx, false));
            args.push(int(self.slots.size(x_slot) / 4));
            self.bind(&out, Loc::U8 { slot, geom: og });
            self.launch(
                &node.name,
                KernelKind::QMaxPool,
                args,
                [1, og.h, og.n * og.cb()],
                0,
                vec![og.n, og.c, og.h, og.w],
            );
            return Ok(());
        }
        let mut args = vec![
            Arg::Slot(self.slot_of(&x)),
            Arg::Slot(slot),
            int(xg.cb()),
            int(xg.h),
            int(xg.w),
        ];
        args.extend(pool_window_args(pool, &wy, &wx, avg_zp.is_some()));
        args.push(Arg::I32(avg_zp.unwrap_or(0)));
        self.bind(&out, Loc::U8 { slot, geom: og });
        self.launch(
            &node.name,
            KernelKind::QPool,
            args,
            [og.w, og.h, og.n * og.cb()],
            0,
            vec![og.n, og.c, og.h, og.w],
        );
        Ok(())
    }
}

/// Arguments of the `quantize` and `dequantize` kernels.
fn edge_args(in_slot: usize, out_slot: usize, geom: Geom, scale: f32, zero_point: i32) -> Vec<Arg> {
    vec![
        Arg::Slot(in_slot),
        Arg::Slot(out_slot),
        int(geom.c),
        int(geom.cb()),
        int(geom.h),
        int(geom.w),
        Arg::F32(scale),
        Arg::I32(zero_point),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::testing;
    use super::*;

    fn outputs_dequantize(g: &Graph) -> Vec<&str> {
        let outs: Vec<&str> = g.outputs.iter().map(|o| o.name.as_str()).collect();
        g.nodes
            .iter()
            .filter(|n| matches!(n.op, Op::Dequantize { .. }) && outs.contains(&n.outputs[0].as_str()))
            .map(|n| n.name.as_str())
            .collect()
    }

    /// An int8 resnet runs wholly on the device but for its outputs' dequantization (after a
    /// u8 download, a quarter of the bytes); its input is quantized as it is uploaded.
    #[test]
    fn only_the_output_edges_run_on_the_host() {
        for name in ["resnet8", "resnet20"] {
            let g = testing::zoo(name, Precision::Int8);
            for batch in [1, 3] {
                let p = plan(&g, batch, &mut Consts::new(), Precision::Int8, testing::target()).unwrap();
                let mut host = testing::host_nodes(&p, &g);
                host.sort_unstable();
                let mut want = outputs_dequantize(&g);
                want.sort_unstable();
                assert_eq!(host, want, "{name} batch {batch}");
                assert!(
                    p.steps.iter().any(|s| matches!(s, Step::UploadQuantized { .. })),
                    "the input's Quantize is not folded into its upload"
                );
                assert!(!testing::launches(&p).iter().any(|l| l.1 == KernelKind::Quantize));
            }
        }
    }

    /// A layer whose requantization shift would overflow the kernels' folded 64-bit sum runs
    /// on the host (the reference), not wrongly on the device.
    #[test]
    fn an_out_of_range_shift_sends_its_layer_to_the_host() {
        let mut g = testing::resnet8_int8();
        let idx = g.nodes.iter().position(|n| matches!(n.op, Op::QConv(_))).unwrap();
        let shift_name = g.nodes[idx].inputs[4].clone();
        let t = &g.initializers[&shift_name];
        let bad = weft_core::Tensor::from_i64(t.shape(), vec![53; t.len()])
            .unwrap()
            .cast(t.dtype());
        g.initializers.insert(shift_name, bad);
        let p = plan(&g, 1, &mut Consts::new(), Precision::Int8, testing::target()).unwrap();
        assert!(testing::host_nodes(&p, &g).contains(&g.nodes[idx].name.as_str()));
    }

    /// A residual convolution that is its residual's last reader writes its output over the
    /// residual (same slot), and every other launch writes a slot no live value holds.
    #[test]
    fn a_dead_residual_is_updated_in_place() {
        let g = testing::resnet8_int8();
        let p = plan(&g, 2, &mut Consts::new(), Precision::Int8, testing::target()).unwrap();
        let in_place = testing::launches(&p)
            .iter()
            .filter(|l| l.1 == KernelKind::QConvC && l.2[6] != Arg::Dummy && l.2[6] == l.2[8])
            .count();
        assert!(in_place >= 1, "no residual convolution wrote in place");
    }

    /// Pooling and means run as their kernels, with the sizes their work-items expect.
    #[test]
    fn pooling_and_means_launch_over_their_outputs() {
        let g = testing::resnet8_int8();
        let p = plan(&g, 2, &mut Consts::new(), Precision::Int8, testing::target()).unwrap();
        let l = testing::launches(&p);
        let means: Vec<_> = l.iter().filter(|x| x.1 == KernelKind::QMean).collect();
        assert_eq!(means.len(), 1);
        // one work-item per channel block of each image: resnet8 ends with 64 channels
        assert_eq!(means[0].3, [2 * 64 / 4, 1, 1]);
    }
}

//! Integer convolutions (and fully connected layers run as convolutions): the input's
//! rearrangement (a kernel-width fold before a stem, a phase split before a stride-2 lane-form
//! layer), the choice of form (`qconvc`, channels in the lanes, or `qconv`, pixels in the
//! lanes), their work-group sizes and the packed constants they read.

use weft_core::shape::window;

use super::*;

impl Planner<'_> {
    /// Whether a convolution of `group` groups runs in the channel form (`qconvc`): one
    /// group, unless the lane form (`qconv`) is forced.
    pub(super) fn channel_form(&self, group: usize) -> bool {
        group == 1 && !self.lane_conv
    }

    /// Global and local sizes for `qconvc` over `tiles` pixel tiles (of the whole batch) and
    /// `z` channel blocks: a group's work-items share one channel block's weights (64 x K
    /// bytes, the larger operand) and walk its tiles; as many tiles per group as keep
    /// `min_groups` groups, rounded down to a power of two (few distinct group sizes, so few
    /// compiled variants where PoCL compiles a kernel per local size: float packages; evenly
    /// sized groups measured no faster).
    fn channel_sizes(&self, tiles: usize, z: usize) -> ([usize; 3], [usize; 3]) {
        let want_x = self.min_groups.div_ceil(z).max(1);
        let lx = (tiles / want_x).clamp(1, self.max_group.min(256));
        let lx = if lx.is_power_of_two() {
            lx
        } else {
            lx.next_power_of_two() / 2
        };
        ([tiles.div_ceil(lx) * lx, 1, z], [lx, 1, 1])
    }

    /// Global and local sizes for `qconv` over `tiles` pixel tiles and `z` channel-block
    /// (times image) indices: all of z in one work-group where that leaves enough groups
    /// (the work-items of a group then share one input tile), else z split; tiles padded
    /// to a multiple of the group's tiles (the kernel skips tiles past the plane).
    fn conv_sizes(&self, tiles: usize, z: usize) -> ([usize; 3], [usize; 3]) {
        let cap = self.max_group.min(256);
        let divisors = |n: usize| (1..=n).filter(move |&d| n.is_multiple_of(d));
        // z per group: the largest divisor of z that fits and leaves min_groups groups
        let lz = divisors(z)
            .filter(|&d| d <= cap && tiles * (z / d) >= self.min_groups)
            .max()
            .unwrap_or(1);
        let groups_z = z / lz;
        // tiles per group: as many as keep min_groups groups
        let want_x = self.min_groups.div_ceil(groups_z).max(1);
        let lx = (tiles / want_x).clamp(1, (cap / lz).max(1));
        let gx = tiles.div_ceil(lx) * lx;
        ([gx, 1, z], [lx, 1, lz])
    }

    /// Packs a convolution's constants into `consts` (once: names already there are kept):
    /// weights per group (`#w{gi}`, `tm` output channels per work-item, folded for a stem
    /// read through `qfold`), biases with the input zero point folded in, by absolute output
    /// channel (`#b{gi}`), and the per-channel multiplier, shift, addend and residual
    /// multiplier (`#mult`, `#shift`, `#radd`, `#rmult`), padded to whole channel-form
    /// work-items.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn conv_consts(
        &self,
        node: &weft_core::Node,
        consts: &mut Consts,
        (m, cg, group): (usize, usize, usize),
        geo: ConvGeo,
        zp_x: i32,
        out: &weft_core::op::QOut,
        residual: Option<&(String, String, i32)>,
        tm: usize,
        folded: bool,
    ) -> Result<(), OpenClError> {
        let g = self.graph;
        let get = |i: usize| {
            node.input(i)
                .and_then(|n| g.initializers.get(n))
                .ok_or_else(|| OpenClError::Unsupported(format!("{}: input {i} is not constant", node.name)))
        };
        let key = |what: &str| format!("{}#{what}", node.name);
        let w = crate::pack::i8_values(get(1)?);
        let bias = crate::pack::i32_values(get(2)?);
        let shifts = crate::pack::i32_values(get(4)?);
        let mg = m / group;
        let per_group = mg * cg * geo.kh * geo.kw;
        // per-channel constants padded to whole channel-form work-items (vector loads)
        let padded = m.div_ceil(QCONVC_TM) * QCONVC_TM;
        if consts.contains_key(&key("mult")) {
            return Ok(());
        }
        let mut mults = crate::pack::i32_values(get(3)?);
        mults.resize(padded, 0);
        consts.insert(key("mult"), words_le(&mults, |v: i32| v.to_le_bytes().to_vec()));
        let mut shifts = shifts.clone();
        // padding channels (multiplier 0) requantize to the zero point at any shift; 32
        // keeps them on the narrow path of `qconvc`
        shifts.resize(padded, 32);
        consts.insert(key("shift"), words_le(&shifts, |v: i32| v.to_le_bytes().to_vec()));
        let mut rmults = vec![0i64; shifts.len()];
        let mut res_zp = 0i64;
        if let Some((_, rmult, zp)) = residual {
            let t = g.initializers.get(rmult).ok_or_else(|| {
                OpenClError::Unsupported(format!("{}: residual multiplier is not constant", node.name))
            })?;
            rmults = t.to_i64_vec();
            rmults.resize(padded, 0);
            res_zp = i64::from(*zp);
            consts.insert(key("rmult"), words_le(&rmults, |v: i64| v.to_le_bytes().to_vec()));
        }
        // zp_out * 2^shift + 2^(shift-1) - zp_r * rmult (see kernels/qconv.cl)
        let add: Vec<i64> = shifts
            .iter()
            .zip(rmults.iter().chain(std::iter::repeat(&0)))
            .map(|(&s, &rm)| (i64::from(out.zero_point) << s) + (1i64 << (s - 1)) - res_zp * rm)
            .collect();
        consts.insert(key("radd"), words_le(&add, |v: i64| v.to_le_bytes().to_vec()));
        for gi in 0..group {
            let wg = &w[gi * per_group..(gi + 1) * per_group];
            let bg = &bias[gi * mg..(gi + 1) * mg];
            let weights = crate::pack::ConvGroup {
                w: wg,
                bias: bg,
                m: mg,
                cg,
                kh: geo.kh,
                kw: geo.kw,
                zp_x,
            };
            let p = if folded {
                weights.pack_folded(tm)
            } else {
                weights.pack(tm)
            };
            consts.insert(
                key(&format!("w{gi}")),
                words_le(&p.words, |v: i32| v.to_le_bytes().to_vec()),
            );
            // biases are indexed by absolute output channel: store the whole vector once per group
            let mut full = vec![0i32; padded];
            full[gi * mg..(gi + 1) * mg].copy_from_slice(&p.bias);
            consts.insert(
                key(&format!("b{gi}")),
                words_le(&full, |v: i32| v.to_le_bytes().to_vec()),
            );
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn conv_launches(
        &mut self,
        node: &weft_core::Node,
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
        let g = self.graph;
        let get = |i: usize| {
            node.input(i)
                .and_then(|n| g.initializers.get(n))
                .ok_or_else(|| OpenClError::Unsupported(format!("{}: input {i} is not constant", node.name)))
        };
        let mg = m / group;
        let x_slot = self.slot_of(&node.inputs[0]);
        let key = |what: &str| format!("{}#{what}", node.name);
        // A layer with one input channel block (a stem) and a kernel wider than 1 reads a
        // kernel-width fold of its input (`qfold`): a KH x 1 convolution over its words.
        let fold_words = crate::pack::stem_fold_words(group, cg, geo.kw, og.w);
        let folded = fold_words.is_some();
        let shifts = crate::pack::i32_values(get(4)?);
        // every shift at least 32: `qconvc` requantizes through the sums' high words
        let narrow = shifts.iter().all(|&s| s >= 32);
        let channel = self.channel_form(group);
        let tm = if channel { QCONVC_TM } else { QCONV_TM };
        self.conv_consts(
            node,
            consts,
            (m, cg, group),
            geo,
            zp_x,
            out,
            residual.as_ref(),
            tm,
            folded,
        )?;
        let (res_arg, rmult_arg, has_res) = match &residual {
            Some((r, _, _)) => (Arg::Slot(self.slot_of(r)), Arg::Const(key("rmult")), 1),
            None => (Arg::Dummy, Arg::Dummy, 0),
        };
        let pad_word = u32::from(zp_x as u8) * 0x0101_0101;
        // Stride-2 layers whose output width is half the input's (rounded up) read a phase
        // split of their input: four stride-1 planes, so the 16 pixels of a work-item are
        // consecutive words (a vector load) instead of a gather.
        let (h2, w2) = (xg.h.div_ceil(2), xg.w.div_ceil(2));
        let phased = !channel && !folded && geo.strides == [2, 2] && geo.dilations == [1, 1] && og.w == w2;
        // what the convolution reads: buffer, channel blocks, size, kernel width, horizontal
        // stride, dilation and padding, and the buffer's words
        let mut g = InGeo {
            slot: x_slot,
            cb: xg.cb(),
            h: xg.h,
            w: xg.w,
            kw: geo.kw,
            sx: geo.strides[1],
            dx: geo.dilations[1],
            pl: geo.pads[1],
        };
        let mut temp = None;
        if let Some(fold_words) = fold_words {
            let fs = self.alloc(xg.n * fold_words * xg.h * og.w * 4);
            self.launch(
                &node.name,
                KernelKind::QFold,
                vec![
                    Arg::Slot(x_slot),
                    Arg::Slot(fs),
                    int(xg.h),
                    int(xg.w),
                    int(og.w),
                    int(geo.kw),
                    int(cg),
                    int(geo.strides[1]),
                    int(geo.dilations[1]),
                    int(geo.pads[1]),
                    Arg::U32(pad_word),
                    int(self.slots.size(x_slot) / 4),
                ],
                [og.w.div_ceil(16), xg.h, xg.n],
                0,
                vec![xg.n, 4 * fold_words, xg.h, og.w],
            );
            g = InGeo {
                slot: fs,
                cb: fold_words,
                h: xg.h,
                w: og.w,
                kw: 1,
                sx: 1,
                dx: 1,
                pl: 0,
            };
            temp = Some(fs);
        }
        if phased {
            let mut phases = 0u32;
            for ky in 0..geo.kh {
                for kx in 0..geo.kw {
                    let py = (ky as i64 - geo.pads[0] as i64).rem_euclid(2);
                    let px = (kx as i64 - geo.pads[1] as i64).rem_euclid(2);
                    phases |= 1 << (py * 2 + px);
                }
            }
            let ps = self.alloc(xg.n * 4 * xg.cb() * h2 * w2 * 4);
            self.launch(
                &node.name,
                KernelKind::QPhase,
                vec![
                    Arg::Slot(x_slot),
                    Arg::Slot(ps),
                    int(xg.cb()),
                    int(xg.h),
                    int(xg.w),
                    int(h2),
                    int(w2),
                    Arg::U32(pad_word),
                    Arg::I32(phases as i32),
                ],
                [h2, 4 * xg.cb(), xg.n],
                0,
                vec![xg.n, 4 * xg.c, h2, w2],
            );
            g.slot = ps;
            g.h = h2;
            g.w = w2;
            temp = Some(ps);
        }
        let in_words = self.slots.size(g.slot) / 4;
        let cbg = fold_words.unwrap_or(cg.div_ceil(4));
        let macs = (og.n * mg * og.h * og.w * cg * geo.kh * geo.kw) as u64;
        // both forms: buffers of group `gi`, then the input's size (after the batch size in
        // the channel form), the window, the clamp and the residual flag, then per-form extras
        let window = [
            int(og.h),
            int(og.w),
            int(geo.kh),
            int(g.kw),
            int(geo.strides[0]),
            int(g.sx),
            int(geo.dilations[0]),
            int(g.dx),
            int(geo.pads[0]),
            int(g.pl),
            Arg::U32(pad_word),
            Arg::I32(out.clamp[0]),
            Arg::I32(out.clamp[1]),
            Arg::I32(has_res),
        ];
        let buffers = |gi: usize| {
            vec![
                Arg::Slot(g.slot),
                Arg::Const(key(&format!("w{gi}"))),
                Arg::Const(key(&format!("b{gi}"))),
                Arg::Const(key("mult")),
                Arg::Const(key("shift")),
                Arg::Const(key("radd")),
                res_arg.clone(),
                rmult_arg.clone(),
                Arg::Slot(slot),
            ]
        };
        let in_size = [int(g.cb), int(g.h), int(g.w)];
        if channel {
            // tiles of the batch's flattened pixels (a tile may span images)
            let tiles = (og.n * og.h * og.w).div_ceil(QCONVC_PIXELS);
            let (global, local) = self.channel_sizes(tiles, m.div_ceil(QCONVC_TM));
            let mut args = buffers(0);
            args.push(int(og.n));
            args.extend(in_size);
            args.push(int(m));
            args.extend(window);
            args.push(Arg::I32(i32::from(narrow)));
            self.steps.push(Step::Launch {
                node: node.name.clone(),
                kernel: KernelKind::QConvC,
                args,
                global,
                local: Some(local),
                macs,
                shape: vec![og.n, og.c, og.h, og.w],
                side: false,
                layer: None,
            });
        } else {
            let (global, local) = self.conv_sizes((og.h * og.w).div_ceil(16), og.n * mg.div_ceil(QCONV_TM));
            for gi in 0..group {
                let mut args = buffers(gi);
                args.extend(in_size.clone());
                args.extend([int(gi * cg / 4), int(cbg), int(mg), int(gi * mg), int(m)]);
                args.extend(window.clone());
                args.extend([int(in_words), Arg::I32(i32::from(phased))]);
                self.steps.push(Step::Launch {
                    node: node.name.clone(),
                    kernel: KernelKind::QConv,
                    args,
                    global,
                    local: Some(local),
                    macs,
                    shape: vec![og.n, og.c, og.h, og.w],
                    side: false,
                    layer: None,
                });
            }
        }
        if let Some(t) = temp {
            self.slots.release_scratch(t);
        }
        Ok(())
    }
}

/// A convolution's (or fully connected layer's) shape, as both the generic and the FPGA
/// lowering plan it: output channels, input channels per group, groups, the output's
/// geometry and the window.
pub(super) struct ConvShape {
    pub(super) m: usize,
    pub(super) cg: usize,
    pub(super) group: usize,
    pub(super) og: Geom,
    pub(super) geo: ConvGeo,
}

impl Planner<'_> {
    /// The constant weights of `node` (its input 1), or an error naming the node.
    /// Whether integer convolution `node` is depthwise: one input channel per group and one
    /// output channel per group (`qdwconv`), with no fused residual.
    pub(super) fn is_depthwise(&self, node: &weft_core::Node, q: &weft_core::op::QConv) -> bool {
        let c = node.input(0).map(|x| self.shape(x)).and_then(|s| s.get(1).copied());
        q.residual_zero_point.is_none()
            && q.conv.group > 1
            && c == Some(q.conv.group)
            && self
                .conv_weights(node)
                .is_ok_and(|w| matches!(w.shape(), &[m, 1, _, _] if m == q.conv.group))
    }

    /// Plans depthwise convolution `node` over `xg` as one `qdwconv` launch, packing its
    /// constants (see kernels/qconv.cl): weights as words [CB][KH * KW] of 4 channels, biases
    /// with the input zero point folded in, multipliers, shifts and addends per channel,
    /// padded to whole channel blocks.
    pub(super) fn depthwise_launch(
        &mut self,
        node: &weft_core::Node,
        consts: &mut Consts,
        xg: Geom,
        q: &weft_core::op::QConv,
    ) -> Result<(), OpenClError> {
        let ConvShape { m, og, geo, .. } = self.qconv_shape(node, &q.conv, xg)?;
        let g = self.graph;
        let get = |i: usize| {
            node.input(i)
                .and_then(|n| g.initializers.get(n))
                .ok_or_else(|| OpenClError::Unsupported(format!("{}: input {i} is not constant", node.name)))
        };
        let taps = geo.kh * geo.kw;
        let cb = m.div_ceil(4);
        let w: Vec<i64> = self.conv_weights(node)?.to_i64_vec();
        let bias = crate::pack::i32_values(get(2)?);
        let mults = crate::pack::i32_values(get(3)?);
        let shifts = crate::pack::i32_values(get(4)?);
        let zp_x = i64::from(q.x_zero_point);
        let zp_out = q.out.zero_point;
        let mut words = vec![0u32; cb * taps];
        let mut folded = vec![0i32; cb * 4];
        let mut mult = vec![0i32; cb * 4];
        let mut shift = vec![0i32; cb * 4];
        let mut add = vec![i64::from(zp_out); cb * 4];
        for c in 0..m {
            let wc = &w[c * taps..(c + 1) * taps];
            for (t, &v) in wc.iter().enumerate() {
                words[(c / 4) * taps + t] |= u32::from(v as i8 as u8) << (8 * (c % 4));
            }
            let sum: i64 = wc.iter().sum();
            folded[c] = (i64::from(bias[c]) - zp_x * sum) as i32;
            mult[c] = mults[c];
            shift[c] = shifts[c];
            add[c] = (i64::from(zp_out) << shifts[c]) + (1i64 << (shifts[c] - 1));
        }
        let key = |what: &str| format!("{}#{what}", node.name);
        consts.insert(key("dw_w"), words_le(&words, |v: u32| v.to_le_bytes().to_vec()));
        consts.insert(key("dw_b"), words_le(&folded, |v: i32| v.to_le_bytes().to_vec()));
        consts.insert(key("dw_mult"), words_le(&mult, |v: i32| v.to_le_bytes().to_vec()));
        consts.insert(key("dw_shift"), words_le(&shift, |v: i32| v.to_le_bytes().to_vec()));
        consts.insert(key("dw_add"), words_le(&add, |v: i64| v.to_le_bytes().to_vec()));
        let x_slot = self.slot_of(&node.inputs[0]);
        let slot = self.alloc(og.bytes());
        let pad_word = u32::from(q.x_zero_point as u8) * 0x0101_0101;
        let mut args = vec![
            Arg::Slot(x_slot),
            Arg::Const(key("dw_w")),
            Arg::Const(key("dw_b")),
            Arg::Const(key("dw_mult")),
            Arg::Const(key("dw_shift")),
            Arg::Const(key("dw_add")),
            Arg::Slot(slot),
            int(xg.cb()),
            int(xg.h),
            int(xg.w),
            int(og.h),
            int(og.w),
        ];
        args.extend(geo.args());
        args.extend([
            Arg::U32(pad_word),
            Arg::I32(q.out.clamp[0]),
            Arg::I32(q.out.clamp[1]),
            int(self.slots.size(x_slot) / 4),
        ]);
        let macs = (og.n * m * og.h * og.w * taps) as u64;
        // one work-item per 16 pixels of a row and channel block
        self.launch(
            &node.name,
            KernelKind::QDwConv,
            args,
            [og.w.div_ceil(16), og.h, og.n * cb],
            macs,
            vec![og.n, m, og.h, og.w],
        );
        let out = node.outputs.first().cloned().unwrap_or_default();
        self.bind(&out, Loc::U8 { slot, geom: og });
        Ok(())
    }

    fn conv_weights(&self, node: &weft_core::Node) -> Result<&weft_core::Tensor, OpenClError> {
        node.input(1)
            .and_then(|w| self.graph.initializers.get(w))
            .ok_or_else(|| OpenClError::Unsupported(format!("{}: weights are not constant", node.name)))
    }

    /// The shape of integer convolution `node` (`conv` its attributes) over an input of
    /// geometry `xg`.
    pub(super) fn qconv_shape(
        &self,
        node: &weft_core::Node,
        conv: &weft_core::op::Conv,
        xg: Geom,
    ) -> Result<ConvShape, OpenClError> {
        let &[m, cg, kh, kw] = self.conv_weights(node)?.shape() else {
            return Err(OpenClError::Unsupported(format!(
                "{}: convolution weights are not [M, C, KH, KW]",
                node.name
            )));
        };
        let wy = window(xg.h, kh, conv.strides[0], conv.dilations[0], &conv.padding, false, 0)
            .map_err(OpenClError::Unsupported)?;
        let wx = window(xg.w, kw, conv.strides[1], conv.dilations[1], &conv.padding, false, 1)
            .map_err(OpenClError::Unsupported)?;
        Ok(ConvShape {
            m,
            cg,
            group: conv.group.max(1),
            og: Geom {
                n: xg.n,
                c: m,
                h: wy.out,
                w: wx.out,
            },
            geo: ConvGeo {
                kh,
                kw,
                strides: conv.strides,
                dilations: conv.dilations,
                pads: [wy.pad_begin, wx.pad_begin],
            },
        })
    }

    /// The shape of fully connected layer `node` over an input of geometry `xg`, run as a
    /// convolution with a kernel as large as the input; `None` when its `[M, K]` weights do
    /// not match the input's `C * H * W` (it then runs on the host).
    pub(super) fn qgemm_shape(&self, node: &weft_core::Node, xg: Geom) -> Result<Option<ConvShape>, OpenClError> {
        let w = self.conv_weights(node)?;
        let (m, k) = match w.shape() {
            &[m, k] => (m, k),
            _ => return Ok(None),
        };
        if k != xg.c * xg.h * xg.w {
            return Ok(None);
        }
        Ok(Some(ConvShape {
            m,
            cg: xg.c,
            group: 1,
            og: Geom {
                n: xg.n,
                c: m,
                h: 1,
                w: 1,
            },
            geo: ConvGeo {
                kh: xg.h,
                kw: xg.w,
                strides: [1, 1],
                dilations: [1, 1],
                pads: [0, 0],
            },
        }))
    }
}

/// The input a `qconv` launch reads, after any fold or phase split.
pub(super) struct InGeo {
    slot: usize,
    cb: usize,
    h: usize,
    w: usize,
    kw: usize,
    sx: usize,
    dx: usize,
    pl: usize,
}

/// A convolution's window: kernel size, strides, dilations and leading padding.
#[derive(Clone, Copy)]
pub(super) struct ConvGeo {
    pub(super) kh: usize,
    pub(super) kw: usize,
    pub(super) strides: [usize; 2],
    pub(super) dilations: [usize; 2],
    pub(super) pads: [usize; 2],
}

impl ConvGeo {
    /// `KH KW SY SX DY DX PT PL`, as the `qdwconv` and `fconv` kernels take the window.
    pub(super) fn args(&self) -> [Arg; 8] {
        [
            int(self.kh),
            int(self.kw),
            int(self.strides[0]),
            int(self.strides[1]),
            int(self.dilations[0]),
            int(self.dilations[1]),
            int(self.pads[0]),
            int(self.pads[1]),
        ]
    }
}

#[cfg(test)]
mod tests {
    use weft_core::Op;

    use super::super::testing;
    use super::*;

    #[test]
    fn work_group_sizes_divide_the_launch_cover_every_tile_and_fill_the_compute_units() {
        let g = testing::resnet8_int8();
        for (cus, max_group) in [(2, 4096), (1, 64), (8, 256), (80, 1024)] {
            let target = Target {
                compute_units: cus,
                max_work_group: max_group,
                lane_conv: false,
                kernels: KernelSet::Default,
            };
            let p = Planner::new(&g, 1, Precision::Int8, target).unwrap();
            for tiles in [1, 2, 5, 16, 43, 100, 523, 4096, 100_000] {
                for z in [1, 2, 3, 4, 8, 16, 64] {
                    let (gl, lo) = p.channel_sizes(tiles, z);
                    assert_eq!(gl[2], z);
                    assert!(
                        gl[0] >= tiles && gl[0] - tiles < lo[0],
                        "{tiles} tiles in {gl:?}/{lo:?}"
                    );
                    assert_eq!(gl[0] % lo[0], 0);
                    assert!(lo[0].is_power_of_two() && lo[0] <= max_group.min(256));
                    assert_eq!((lo[1], lo[2]), (1, 1));
                    // enough groups for every compute unit unless the group is at its cap
                    let groups = gl[0] / lo[0] * z;
                    let want_x = p.min_groups.div_ceil(z);
                    if tiles >= want_x && lo[0] < max_group.min(256) {
                        assert!(groups >= p.min_groups, "{groups} groups for {tiles} tiles x {z}");
                    }

                    let (gl, lo) = p.conv_sizes(tiles, z);
                    assert_eq!(gl[2], z);
                    assert!(gl[0] >= tiles && gl[0] - tiles < lo[0]);
                    assert_eq!(gl[0] % lo[0], 0);
                    assert_eq!(gl[2] % lo[2], 0);
                    assert!(lo[0] * lo[2] <= max_group.min(256), "{lo:?} over the device's group");
                }
            }
        }
    }

    /// Every convolution of resnet8 in the channel form (its 3-channel stem after a fold) or,
    /// forced, in the lane form (its stride-2 layers after a phase split).
    #[test]
    fn the_form_follows_the_target_and_the_input_is_rearranged_where_it_pays() {
        let g = testing::resnet8_int8();
        let convs = g
            .nodes
            .iter()
            .filter(|n| matches!(n.op, Op::QConv(_) | Op::QGemm(_)))
            .count();
        let strided = g
            .nodes
            .iter()
            .filter(|n| matches!(&n.op, Op::QConv(q) if q.conv.strides == [2, 2]))
            .count();
        for lane_conv in [false, true] {
            let target = Target {
                lane_conv,
                ..testing::target()
            };
            let p = plan(&g, 1, &mut Consts::new(), Precision::Int8, target).unwrap();
            let l = testing::launches(&p);
            let count = |k: KernelKind| l.iter().filter(|x| x.1 == k).count();
            if lane_conv {
                assert_eq!((count(KernelKind::QConv), count(KernelKind::QConvC)), (convs, 0));
                assert!(count(KernelKind::QPhase) >= 1 && count(KernelKind::QPhase) <= strided);
            } else {
                assert_eq!((count(KernelKind::QConv), count(KernelKind::QConvC)), (0, convs));
                assert_eq!(count(KernelKind::QPhase), 0);
            }
            // the stem (3 input channels, 3 wide) reads a fold of its input in either form
            assert_eq!(count(KernelKind::QFold), 1);
            let fold = l.iter().position(|x| x.1 == KernelKind::QFold).unwrap();
            assert_eq!(l[fold].0, l[fold + 1].0, "the fold runs right before its convolution");
        }
    }

    /// The per-channel constants: padded to whole channel-form work-items, the padding
    /// requantizing on the narrow path (shift 32, multiplier 0), and the addend folding the
    /// output zero point, the rounding half and the residual zero point.
    #[test]
    fn requantization_constants_are_padded_and_fold_the_zero_points() {
        let g = testing::resnet8_int8();
        let mut consts = Consts::new();
        plan(&g, 1, &mut consts, Precision::Int8, testing::target()).unwrap();
        let words = |name: &str, size: usize| -> Vec<i64> {
            consts[name]
                .chunks(size)
                .map(|c| match size {
                    4 => i64::from(i32::from_le_bytes(c.try_into().unwrap())),
                    _ => i64::from_le_bytes(c.try_into().unwrap()),
                })
                .collect()
        };
        let mut checked = 0;
        for n in &g.nodes {
            let Op::QConv(q) = &n.op else { continue };
            let shifts = g.initializers[&n.inputs[4]].to_i64_vec();
            let mults = g.initializers[&n.inputs[3]].to_i64_vec();
            let m = shifts.len();
            let padded = m.div_ceil(QCONVC_TM) * QCONVC_TM;
            let sh = words(&format!("{}#shift", n.name), 4);
            let mu = words(&format!("{}#mult", n.name), 4);
            let add = words(&format!("{}#radd", n.name), 8);
            assert_eq!((sh.len(), mu.len(), add.len()), (padded, padded, padded));
            assert_eq!(&sh[..m], &shifts[..]);
            assert_eq!(&mu[..m], &mults[..]);
            assert!(sh[m..].iter().all(|&s| s == 32) && mu[m..].iter().all(|&v| v == 0));
            let (rm, zr) = match q.residual_zero_point {
                Some(zr) => (g.initializers[&n.inputs[6]].to_i64_vec(), i64::from(zr)),
                None => (vec![0; m], 0),
            };
            for c in 0..m {
                let s = shifts[c];
                let want = (i64::from(q.out.zero_point) << s) + (1 << (s - 1)) - zr * rm[c];
                assert_eq!(add[c], want, "{} channel {c}", n.name);
            }
            checked += 1;
        }
        assert!(checked >= 5);
    }
}

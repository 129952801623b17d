//! Scheduling: the side queue (a downsampling convolution planned ahead of its place, run
//! beside the main branch between a fork and a join) and the order of a run's host-only
//! steps.

use weft_core::Op;

use super::*;

/// Within each run of steps that touch only the host (downloads and host nodes, as at a
/// network's outputs), the downloads moved ahead of the host nodes, in order: their values
/// are final once the run starts (host nodes write no device memory), so the session can
/// read them all behind one wait.
pub(super) fn downloads_first(steps: Vec<Step>) -> Vec<Step> {
    let mut out = Vec::with_capacity(steps.len());
    let mut hosts = Vec::new();
    for step in steps {
        match step {
            Step::Download { .. } => out.push(step),
            Step::Host { .. } => hosts.push(step),
            _ => {
                out.append(&mut hosts);
                out.push(step);
            }
        }
    }
    out.append(&mut hosts);
    out
}

/// A node planned ahead of its place onto the side queue: the values it produces and the
/// slots it uses, held (not reused) until the main queue joins it.
#[derive(Default)]
pub(super) struct SideBranch {
    pub(super) outputs: HashSet<String>,
    held: Vec<usize>,
}

impl Planner<'_> {
    /// A later node that may run on the side queue while node `idx` runs: an ungrouped
    /// integer convolution whose only activation input is one of `idx`'s inputs, already
    /// on the device (ResNet's downsampling branch beside a block's first convolution).
    /// Kernels of one layer leave compute units idle at their start and end (worker
    /// wake-up, the last work-groups); a second stream of work-groups fills those gaps.
    pub(super) fn side_candidate(&self, idx: usize, early: &HashSet<usize>) -> Option<usize> {
        let g = self.graph;
        let n = &g.nodes[idx];
        if self.precision != Precision::Int8 || self.fpga || !matches!(n.op, Op::QConv(_)) {
            return None;
        }
        let activations = |node: &weft_core::Node| -> Vec<String> {
            node.inputs
                .iter()
                .filter(|i| !i.is_empty() && !g.initializers.contains_key(*i))
                .cloned()
                .collect()
        };
        let xs = activations(n);
        let [x] = xs.as_slice() else { return None };
        if !matches!(self.loc.get(x), Some(Loc::U8 { .. })) {
            return None;
        }
        (idx + 1..g.nodes.len()).find(|&d| {
            let dn = &g.nodes[d];
            !early.contains(&d)
                && matches!(&dn.op, Op::QConv(q) if q.conv.group == 1 && q.residual_zero_point.is_none())
                && activations(dn).as_slice() == std::slice::from_ref(x)
                && dn.outputs.iter().all(|o| !self.outputs.contains(o))
        })
    }

    /// Plans node `d` now, its launches on the side queue after a `Fork`; the slots they
    /// use stay out of reuse until `join`.
    pub(super) fn fork(&mut self, d: usize, consts: &mut Consts) -> Result<SideBranch, OpenClError> {
        self.steps.push(Step::Fork);
        let first = self.steps.len();
        self.node(d, consts)?;
        let mut held = Vec::new();
        for step in &mut self.steps[first..] {
            if let Step::Launch { side, args, .. } = step {
                *side = true;
                held.extend(args.iter().filter_map(Arg::slot));
            }
        }
        held.sort_unstable();
        held.dedup();
        for &s in &held {
            self.slots.hold(s);
        }
        let outputs = self.graph.nodes[d].outputs.iter().cloned().collect();
        Ok(SideBranch { outputs, held })
    }

    /// Waits for the side queue's branch and returns its held slots.
    pub(super) fn join(&mut self, b: SideBranch) {
        self.steps.push(Step::Join);
        for s in b.held {
            self.slots.drop_user(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing;
    use super::*;

    /// Downloads move ahead of the host nodes of their own host-only run, in order, and never
    /// past a step that touches the device.
    #[test]
    fn downloads_move_ahead_of_host_nodes_within_their_run() {
        let dl = |v: &str| Step::Download {
            value: v.into(),
            loc: Loc::Host,
            shape: vec![],
        };
        let name = |s: &Step| match s {
            Step::Download { value, .. } => format!("d:{value}"),
            Step::Host { node } => format!("h:{node}"),
            Step::Fork => "fork".into(),
            _ => "other".into(),
        };
        let steps = vec![
            dl("a"),
            Step::Host { node: 0 },
            dl("b"),
            Step::Fork,
            Step::Host { node: 1 },
            dl("c"),
            Step::Host { node: 2 },
            dl("d"),
        ];
        let got: Vec<String> = downloads_first(steps).iter().map(name).collect();
        assert_eq!(got, ["d:a", "d:b", "h:0", "fork", "d:c", "d:d", "h:1", "h:2"]);
    }

    /// A convolution launch's output buffer (the last of `QCONV_BUFFERS`).
    fn conv_output(kernel: KernelKind, args: &[Arg]) -> Option<usize> {
        match (kernel, args.get(8)) {
            (KernelKind::QConv | KernelKind::QConvC, Some(Arg::Slot(s))) => Some(*s),
            _ => None,
        }
    }

    /// The same graph with one more convolution before each residual one (a copy of it
    /// without the residual, feeding it): ResNet's bottleneck order, where a block's input is
    /// dead (in graph order) after its downsampling convolution, before the block's next
    /// main convolution allocates its output.
    fn with_middle_convolutions(mut g: Graph) -> Graph {
        let mut i = 0;
        while i < g.nodes.len() {
            if let Op::QConv(q) = &g.nodes[i].op
                && q.residual_zero_point.is_some()
            {
                let c = &g.nodes[i];
                let mid = format!("{}.mid", c.inputs[0]);
                let mut q = q.clone();
                q.residual_zero_point = None;
                let m = weft_core::Node {
                    name: format!("{}.mid", c.name),
                    op: Op::QConv(q),
                    inputs: c.inputs[..5].to_vec(),
                    outputs: vec![mid.clone()],
                };
                g.nodes[i].inputs[0] = mid;
                g.nodes.insert(i, m);
                i += 1;
            }
            i += 1;
        }
        g
    }

    /// What a fork .. join region's launches use: the side's slots and outputs, the main
    /// launches' outputs and slots.
    #[derive(Default)]
    struct Region {
        side_slots: Vec<usize>,
        side_out: Vec<usize>,
        main_out: Vec<usize>,
        main_slots: Vec<Vec<usize>>,
    }

    #[test]
    fn downsampling_branches_run_on_the_side_queue_without_sharing_a_written_slot() {
        let r8 = testing::resnet8_int8();
        let bottleneck = with_middle_convolutions(r8.clone());
        assert!(bottleneck.nodes.len() > r8.nodes.len());
        for (g, batch) in [(&r8, 1), (&r8, 3), (&bottleneck, 1), (&bottleneck, 2)] {
            let plan = plan(g, batch, &mut Consts::new(), Precision::Int8, testing::target()).unwrap();
            let forks = plan.steps.iter().filter(|s| matches!(s, Step::Fork)).count();
            let joins = plan.steps.iter().filter(|s| matches!(s, Step::Join)).count();
            assert!(forks >= 1, "resnet8's downsampling convolutions should fork");
            assert_eq!(forks, joins);
            // Between a fork and its join: the side launches' slots and the main launches'
            // outputs are disjoint, and no main launch reads what the side writes.
            let mut region: Option<Region> = None;
            for step in &plan.steps {
                match step {
                    Step::Fork => {
                        assert!(region.is_none(), "nested fork");
                        region = Some(Default::default());
                    }
                    Step::Join => {
                        let Region {
                            side_slots,
                            side_out,
                            main_out,
                            main_slots,
                        } = region.take().expect("join without fork");
                        assert!(!side_slots.is_empty(), "a fork with no side launch");
                        for o in &main_out {
                            assert!(!side_slots.contains(o), "a main launch writes slot {o} the side uses");
                        }
                        for used in &main_slots {
                            for o in &side_out {
                                assert!(!used.contains(o), "a main launch reads slot {o} the side writes");
                            }
                        }
                    }
                    Step::Launch { kernel, args, side, .. } => {
                        let slots: Vec<usize> = args.iter().filter_map(Arg::slot).collect();
                        match (&mut region, side) {
                            (Some(r), true) => {
                                r.side_slots.extend(&slots);
                                r.side_out.extend(conv_output(*kernel, args));
                            }
                            (Some(r), false) => {
                                r.main_out.extend(conv_output(*kernel, args));
                                r.main_slots.push(slots);
                            }
                            (None, s) => assert!(!s, "a side launch outside a fork"),
                        }
                    }
                    _ => {}
                }
            }
            assert!(region.is_none(), "a fork without its join");
        }
    }
}

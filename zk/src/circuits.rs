//! The circuit registry and the constraint systems themselves.
//!
//! Every circuit has exactly three public inputs, in this order:
//! `[task_binding, input_commitment, output_commitment]`. The commitments are computed inside
//! the circuit from the private witnesses with the MiMC hash of [`crate::mimc`], so a proof
//! binds the task, the inputs and the output. Each MiMC round costs 4 constraints
//! (`a²`, `a⁴`, `a⁶`, `a⁷`); intermediate values are always fresh witnesses, never growing
//! linear combinations.

use std::fmt;
use std::str::FromStr;

use ark_bn254::Fr;
use ark_ff::Zero;
use ark_relations::gr1cs::{
    ConstraintSynthesizer, ConstraintSystem, ConstraintSystemRef, LinearCombination,
    SynthesisError, SynthesisMode, Variable,
};

use crate::error::ZkError;
use crate::mimc::{self, MIMC_ROUNDS};

/// Constraints per MiMC-7 permutation (4 multiplications per round).
pub const CONSTRAINTS_PER_MIMC: usize = 4 * MIMC_ROUNDS;

/// A registered circuit kind. Sizes are chosen per instance with [`CircuitSpec`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CircuitId {
    /// `y = h^n(x)`, a chain of `n` MiMC hash steps over a private seed `x`.
    HashChain,
    /// `s = Σ a_i·b_i` over two private length-`L` vectors of fixed-point integers.
    Dot,
}

impl CircuitId {
    /// The registry name: `"hash_chain"` or `"dot"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::HashChain => "hash_chain",
            Self::Dot => "dot",
        }
    }

    /// Looks a circuit up by its registry name.
    pub fn parse(name: &str) -> Result<Self, ZkError> {
        Self::all()
            .iter()
            .copied()
            .find(|c| c.name() == name)
            .ok_or_else(|| ZkError::UnknownCircuit(name.to_owned()))
    }

    /// Every registered circuit.
    pub fn all() -> &'static [CircuitId] {
        &[Self::HashChain, Self::Dot]
    }

    /// The size used when none is given: `n = 256` steps, `L = 16` elements.
    pub fn default_size(self) -> usize {
        match self {
            Self::HashChain => 256,
            Self::Dot => 16,
        }
    }

    /// The accepted size range, inclusive.
    ///
    /// Both upper bounds give about 1.49 million constraints (`hash_chain` n = 4096,
    /// `dot` L = 2048), measured on a 2-core machine (BENCHMARKS.md, "zk_proof at any size"):
    /// a setup of about 70 s, a 306 MB compressed proving key, about 50 s of proving plus a
    /// minute to decode the key on a node's first task of that size, and a 2 GiB peak for a
    /// process doing all three: far within the largest `max_execution_time_sec` a coordinator
    /// allows by default (3600 s).
    /// What bounds them is the key rather than the time: it travels to every node that proves
    /// the size (agents download at most 1 GiB) and is one row of the coordinator's store.
    pub fn size_range(self) -> (usize, usize) {
        match self {
            Self::HashChain => (1, 4096),
            Self::Dot => (1, 2048),
        }
    }
}

impl fmt::Display for CircuitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for CircuitId {
    type Err = ZkError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A circuit instance: a kind and its size (`n` for `hash_chain`, `L` for `dot`).
///
/// Keys belong to one `CircuitSpec`; a key for `hash_chain` at `n = 256` cannot prove or
/// verify `hash_chain` at `n = 64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CircuitSpec {
    id: CircuitId,
    size: usize,
}

impl CircuitSpec {
    /// A circuit at a given size, checked against [`CircuitId::size_range`].
    pub fn new(id: CircuitId, size: usize) -> Result<Self, ZkError> {
        let (min, max) = id.size_range();
        if !(min..=max).contains(&size) {
            return Err(ZkError::BadSize {
                circuit: id.name(),
                size,
                min,
                max,
            });
        }
        Ok(Self { id, size })
    }

    /// A circuit at its [`CircuitId::default_size`].
    pub fn default_for(id: CircuitId) -> Self {
        Self {
            id,
            size: id.default_size(),
        }
    }

    /// The circuit kind.
    pub fn id(&self) -> CircuitId {
        self.id
    }

    /// The size parameter.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The number of R1CS constraints, computed from the circuit's structure.
    ///
    /// `hash_chain`: `364·(n + 2) + 1`; `dot`: `364·(2L + 1) + L + 1`.
    pub fn expected_constraints(&self) -> usize {
        match self.id {
            CircuitId::HashChain => CONSTRAINTS_PER_MIMC * (self.size + 2) + 1,
            CircuitId::Dot => CONSTRAINTS_PER_MIMC * (2 * self.size + 1) + self.size + 1,
        }
    }
}

impl fmt::Display for CircuitSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.id.name(), self.size)
    }
}

impl FromStr for CircuitSpec {
    type Err = ZkError;

    /// Reads what [`CircuitSpec`]'s `Display` writes, `<circuit>-<size>` (e.g. `hash_chain-64`),
    /// checking the size against [`CircuitId::size_range`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, size) = s
            .rsplit_once('-')
            .ok_or_else(|| ZkError::UnknownCircuit(s.to_owned()))?;
        let id = CircuitId::parse(name)?;
        let size = size.parse().map_err(|_| ZkError::BadInput {
            circuit: id.name(),
            reason: format!("{size:?} is not a size"),
        })?;
        Self::new(id, size)
    }
}

/// A task's inputs, as the node receives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inputs {
    /// The seed of the chain.
    HashChain {
        /// Seed `x`.
        x: Fr,
    },
    /// Two vectors of fixed-point integers (the scale is the caller's; the sum carries the
    /// square of it).
    Dot {
        /// Left vector, length `L`.
        a: Vec<i64>,
        /// Right vector, length `L`.
        b: Vec<i64>,
    },
}

/// A task's result, as the node claims it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// `y = h^n(x)`.
    HashChain {
        /// The end of the chain.
        y: Fr,
    },
    /// `s = Σ a_i·b_i`, exact.
    Dot {
        /// The sum.
        sum: i128,
    },
}

/// The three public inputs of every circuit, in circuit order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicInputs {
    /// [`mimc::task_binding`] of the task id.
    pub task_binding: Fr,
    /// [`mimc::hash`] of the inputs (`[x]`, or `a ‖ b`).
    pub input_commitment: Fr,
    /// [`mimc::hash`] of the outputs (`[y]`, or `[s]`).
    pub output_commitment: Fr,
}

impl PublicInputs {
    /// The inputs in the order Groth16 (and snarkjs `public.json`) expects.
    pub fn to_vec(&self) -> Vec<Fr> {
        vec![
            self.task_binding,
            self.input_commitment,
            self.output_commitment,
        ]
    }
}

/// The field encodings of `inputs` after checking them against `spec`.
pub(crate) fn input_elements(spec: &CircuitSpec, inputs: &Inputs) -> Result<Vec<Fr>, ZkError> {
    let bad = |reason: String| ZkError::BadInput {
        circuit: spec.id.name(),
        reason,
    };
    match (spec.id, inputs) {
        (CircuitId::HashChain, Inputs::HashChain { x }) => Ok(vec![*x]),
        (CircuitId::Dot, Inputs::Dot { a, b }) => {
            if a.len() != spec.size || b.len() != spec.size {
                return Err(bad(format!(
                    "vectors have lengths {} and {}, the circuit takes {}",
                    a.len(),
                    b.len(),
                    spec.size
                )));
            }
            Ok(a.iter().chain(b).map(|&v| Fr::from(v)).collect())
        }
        (id, other) => Err(bad(format!("{other:?} are not {id} inputs"))),
    }
}

/// The field encodings of `output` after checking that it is an output of `spec`.
pub(crate) fn output_elements(spec: &CircuitSpec, output: &Output) -> Result<Vec<Fr>, ZkError> {
    match (spec.id, output) {
        (CircuitId::HashChain, Output::HashChain { y }) => Ok(vec![*y]),
        (CircuitId::Dot, Output::Dot { sum }) => Ok(vec![Fr::from(*sum)]),
        (id, other) => Err(ZkError::BadInput {
            circuit: spec.id.name(),
            reason: format!("{other:?} is not a {id} output"),
        }),
    }
}

/// Computes the output natively (what the node does before proving).
pub fn compute_output(spec: &CircuitSpec, inputs: &Inputs) -> Result<Output, ZkError> {
    input_elements(spec, inputs)?;
    match inputs {
        Inputs::HashChain { x } => Ok(Output::HashChain {
            y: mimc::hash_chain(*x, spec.size),
        }),
        Inputs::Dot { a, b } => a
            .iter()
            .zip(b)
            .try_fold(0i128, |acc, (&x, &y)| {
                acc.checked_add(i128::from(x) * i128::from(y))
            })
            .map(|sum| Output::Dot { sum })
            .ok_or_else(|| ZkError::BadInput {
                circuit: spec.id.name(),
                reason: "the dot product overflows i128".into(),
            }),
    }
}

/// The constraint system of one circuit instance. With no witness it is the shape used by
/// setup; with one it is what the prover satisfies.
#[derive(Clone)]
pub(crate) struct Circuit {
    pub(crate) spec: CircuitSpec,
    /// Public inputs and the input field elements, present when proving.
    pub(crate) assignment: Option<(PublicInputs, Vec<Fr>)>,
}

/// A linear combination with its value (absent during setup).
#[derive(Clone)]
struct Wire {
    lc: LinearCombination<Fr>,
    val: Option<Fr>,
}

impl Wire {
    fn var(v: Variable, val: Option<Fr>) -> Self {
        Self {
            lc: LinearCombination::from(v),
            val,
        }
    }

    fn constant(c: Fr) -> Self {
        Self {
            lc: LinearCombination::from((c, Variable::One)),
            val: Some(c),
        }
    }

    fn zero() -> Self {
        Self {
            lc: LinearCombination::zero(),
            val: Some(Fr::zero()),
        }
    }
}

fn witness(cs: &ConstraintSystemRef<Fr>, val: Option<Fr>) -> Result<Variable, SynthesisError> {
    cs.new_witness_variable(|| val.ok_or(SynthesisError::AssignmentMissing))
}

fn mul(
    cs: &ConstraintSystemRef<Fr>,
    a: &Wire,
    b: &Wire,
    target: Option<Variable>,
) -> Result<Wire, SynthesisError> {
    let val = a.val.zip(b.val).map(|(x, y)| x * y);
    let out = match target {
        Some(v) => v,
        None => witness(cs, val)?,
    };
    cs.enforce_r1cs_constraint(|| a.lc.clone(), || b.lc.clone(), || out.into())?;
    Ok(Wire::var(out, val))
}

/// Enforces `out = E_key(x) − key + offset` (i.e. the last round's `a⁷` plus `offset`), in
/// `4·91` constraints. `out` is `target` when given (a public input), else a fresh witness.
fn mimc_gadget(
    cs: &ConstraintSystemRef<Fr>,
    x: &Wire,
    key: &Wire,
    offset: &Wire,
    target: Option<Variable>,
) -> Result<Wire, SynthesisError> {
    let constants = mimc::round_constants();
    let mut t = x.clone();
    for (i, c) in constants.iter().enumerate() {
        let a = Wire {
            lc: &(&t.lc + &key.lc) + LinearCombination::from((*c, Variable::One)),
            val: t.val.zip(key.val).map(|(t, k)| t + k + c),
        };
        let a2 = mul(cs, &a, &a, None)?;
        let a4 = mul(cs, &a2, &a2, None)?;
        let a6 = mul(cs, &a4, &a2, None)?;
        if i + 1 < constants.len() {
            t = mul(cs, &a6, &a, None)?;
        } else {
            // a6 · a = out − offset, so the addition costs no constraint.
            let val = a6
                .val
                .zip(a.val)
                .zip(offset.val)
                .map(|((p, q), o)| p * q + o);
            let out = match target {
                Some(v) => v,
                None => witness(cs, val)?,
            };
            let a6_lc = a6.lc.clone();
            let a_lc = a.lc.clone();
            cs.enforce_r1cs_constraint(
                || a6_lc,
                || a_lc,
                || LinearCombination::from(out) - &offset.lc,
            )?;
            return Ok(Wire::var(out, val));
        }
    }
    Err(SynthesisError::Unsatisfiable)
}

/// `H(elems)` as constraints (see [`mimc::hash`]); the result is `target` when given.
fn hash_gadget(
    cs: &ConstraintSystemRef<Fr>,
    elems: &[Wire],
    target: Option<Variable>,
) -> Result<Wire, SynthesisError> {
    let mut s = Wire::constant(Fr::from(elems.len() as u64));
    for (j, x) in elems.iter().enumerate() {
        // s' = E_s(x) + s + x = a⁷ + 2s + x.
        let offset = Wire {
            lc: &(&s.lc * Fr::from(2u64)) + &x.lc,
            val: s.val.zip(x.val).map(|(s, x)| s + s + x),
        };
        let last = j + 1 == elems.len();
        s = mimc_gadget(cs, x, &s, &offset, if last { target } else { None })?;
    }
    if elems.is_empty() {
        return Err(SynthesisError::Unsatisfiable);
    }
    Ok(s)
}

impl ConstraintSynthesizer<Fr> for Circuit {
    fn generate_constraints(self, cs: ConstraintSystemRef<Fr>) -> Result<(), SynthesisError> {
        let (public, inputs) = match self.assignment {
            Some((p, i)) => (Some(p), Some(i)),
            None => (None, None),
        };
        let input = |f: fn(&PublicInputs) -> Fr| {
            let val = public.as_ref().map(f);
            cs.new_input_variable(|| val.ok_or(SynthesisError::AssignmentMissing))
        };
        let task_binding = input(|p| p.task_binding)?;
        let input_commitment = input(|p| p.input_commitment)?;
        let output_commitment = input(|p| p.output_commitment)?;

        // Put the task binding into a constraint of its own (tb · tb = tb²), so the
        // statement visibly depends on it and not only through the QAP's input padding.
        let tb = Wire::var(task_binding, public.as_ref().map(|p| p.task_binding));
        mul(&cs, &tb, &tb, None)?;

        let n_inputs = match self.spec.id {
            CircuitId::HashChain => 1,
            CircuitId::Dot => 2 * self.spec.size,
        };
        let xs = (0..n_inputs)
            .map(|i| {
                let val = inputs.as_ref().and_then(|v| v.get(i).copied());
                Ok(Wire::var(witness(&cs, val)?, val))
            })
            .collect::<Result<Vec<_>, SynthesisError>>()?;
        hash_gadget(&cs, &xs, Some(input_commitment))?;

        let result = match self.spec.id {
            CircuitId::HashChain => {
                // v_{j+1} = E_0(v_j) + v_j, each v_j a fresh witness.
                let mut v = xs[0].clone();
                for _ in 0..self.spec.size {
                    v = mimc_gadget(&cs, &v, &Wire::zero(), &v, None)?;
                }
                v
            }
            CircuitId::Dot => {
                // acc_{i+1} = acc_i + a_i·b_i, one constraint and one witness per term.
                let (a, b) = xs.split_at(self.spec.size);
                let mut acc = Wire::zero();
                for (ai, bi) in a.iter().zip(b) {
                    let val = acc.val.zip(ai.val).zip(bi.val).map(|((s, x), y)| s + x * y);
                    let next = witness(&cs, val)?;
                    cs.enforce_r1cs_constraint(
                        || ai.lc.clone(),
                        || bi.lc.clone(),
                        || LinearCombination::from(next) - &acc.lc,
                    )?;
                    acc = Wire::var(next, val);
                }
                acc
            }
        };
        hash_gadget(&cs, &[result], Some(output_commitment))?;
        Ok(())
    }
}

/// Counts of one circuit instance's constraint system, taken from a setup-mode synthesis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// R1CS constraints.
    pub constraints: usize,
    /// Instance variables, including the constant `1`.
    pub instance_variables: usize,
    /// Witness variables.
    pub witness_variables: usize,
}

/// Synthesises `spec` without a witness and counts what it built.
pub fn shape(spec: &CircuitSpec) -> Result<Shape, ZkError> {
    let cs = ConstraintSystem::<Fr>::new_ref();
    cs.set_mode(SynthesisMode::Setup);
    Circuit {
        spec: *spec,
        assignment: None,
    }
    .generate_constraints(cs.clone())?;
    cs.finalize();
    Ok(Shape {
        constraints: cs.num_constraints(),
        instance_variables: cs.num_instance_variables(),
        witness_variables: cs.num_witness_variables(),
    })
}

/// Synthesises `spec` with a full assignment and reports whether it is satisfied
/// (a debugging aid; proving does not need it).
#[cfg(test)]
pub(crate) fn is_satisfied(circuit: Circuit) -> Result<bool, ZkError> {
    let cs = ConstraintSystem::<Fr>::new_ref();
    circuit.generate_constraints(cs.clone())?;
    cs.finalize();
    Ok(cs.is_satisfied()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_round_trips() {
        for &id in CircuitId::all() {
            assert_eq!(CircuitId::parse(id.name()).ok(), Some(id));
            assert_eq!(id.to_string().parse::<CircuitId>().ok(), Some(id));
        }
        assert!(matches!(
            CircuitId::parse("sha256"),
            Err(ZkError::UnknownCircuit(_))
        ));
        assert!(CircuitSpec::new(CircuitId::HashChain, 0).is_err());
        let spec = CircuitSpec::new(CircuitId::HashChain, 1000).unwrap();
        assert_eq!(spec.to_string().parse::<CircuitSpec>().ok(), Some(spec));
        assert_eq!("dot-16".parse::<CircuitSpec>().unwrap().size(), 16);
        for bad in [
            "hash_chain",
            "hash_chain-",
            "hash_chain-x",
            "sha-4",
            "dot-0",
            "dot--1",
        ] {
            assert!(bad.parse::<CircuitSpec>().is_err(), "{bad}");
        }
        let (_, max) = CircuitId::HashChain.size_range();
        assert!(
            format!("hash_chain-{}", max + 1)
                .parse::<CircuitSpec>()
                .is_err()
        );
    }

    fn assignment(spec: CircuitSpec, inputs: &Inputs, output: &Output) -> Circuit {
        let public = crate::public_inputs_for(&spec, b"task", inputs, output).unwrap();
        Circuit {
            spec,
            assignment: Some((public, input_elements(&spec, inputs).unwrap())),
        }
    }

    #[test]
    fn gadgets_match_native_and_reject_wrong_outputs() {
        let spec = CircuitSpec::new(CircuitId::HashChain, 3).unwrap();
        let inputs = Inputs::HashChain { x: Fr::from(42u64) };
        let out = compute_output(&spec, &inputs).unwrap();
        assert!(is_satisfied(assignment(spec, &inputs, &out)).unwrap());
        let wrong = Output::HashChain { y: Fr::from(1u64) };
        assert!(!is_satisfied(assignment(spec, &inputs, &wrong)).unwrap());

        let spec = CircuitSpec::new(CircuitId::Dot, 3).unwrap();
        let inputs = Inputs::Dot {
            a: vec![1, -2, 3],
            b: vec![4, 5, -6],
        };
        let out = compute_output(&spec, &inputs).unwrap();
        assert_eq!(out, Output::Dot { sum: 4 - 10 - 18 });
        assert!(is_satisfied(assignment(spec, &inputs, &out)).unwrap());
        assert!(!is_satisfied(assignment(spec, &inputs, &Output::Dot { sum: -23 })).unwrap());
    }

    #[test]
    fn shape_matches_formula() {
        for spec in [
            CircuitSpec::new(CircuitId::HashChain, 5).unwrap(),
            CircuitSpec::new(CircuitId::Dot, 4).unwrap(),
        ] {
            let s = shape(&spec).unwrap();
            assert_eq!(s.constraints, spec.expected_constraints(), "{spec}");
            assert_eq!(s.instance_variables, 4);
        }
    }
}

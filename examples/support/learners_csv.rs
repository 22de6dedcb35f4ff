//! The learners CSV layout, shared by `examples/gen_learners.rs` (which writes it) and
//! `examples/learners_graph.rs` (which reads it).

/// The CSV header, in column order.
pub(crate) const HEADER: [&str; 11] = [
    "learner_id",
    "full_name",
    "gender",
    "city",
    "country",
    "skills",
    "employment",
    "enrollments",
    "learning_state",
    "professional_status",
    "snapshot_date",
];

//! [`RunPlan`]: a sink's plan for one run (which input column goes to which table column, how it is
//! converted), made from that run's schema and checked against every batch.

use std::sync::{Arc, Mutex};

use arrow_schema::SchemaRef;

use crate::error::{PgError, Result};

/// The plan of the current run. A sink may be run again with another schema (other column order,
/// other columns): `start` makes a new plan, so a reused sink never writes by the first run's
/// column positions. A batch whose columns differ from the plan's is an error, never written.
pub(crate) struct RunPlan<T> {
    current: Mutex<Option<(SchemaRef, Arc<T>)>>,
}

impl<T> RunPlan<T> {
    pub(crate) fn new() -> Self {
        RunPlan { current: Mutex::new(None) }
    }

    /// Makes `plan` the plan for batches of `schema`.
    pub(crate) fn set(&self, schema: &SchemaRef, plan: T) -> Arc<T> {
        let plan = Arc::new(plan);
        *self.current.lock().expect("run plan poisoned") = Some((schema.clone(), plan.clone()));
        plan
    }

    /// The plan, if one was made.
    pub(crate) fn current(&self) -> Option<Arc<T>> {
        self.current.lock().expect("run plan poisoned").as_ref().map(|(_, p)| p.clone())
    }

    /// The plan for a batch of `schema` (`None`: no plan yet). `Err` when the plan was made for
    /// other columns (names or types, in order) than the batch has.
    pub(crate) fn for_batch(&self, schema: &SchemaRef, table: &str) -> Result<Option<Arc<T>>> {
        let current = self.current.lock().expect("run plan poisoned");
        let Some((planned, plan)) = current.as_ref() else { return Ok(None) };
        let same = Arc::ptr_eq(planned, schema)
            || (planned.fields().len() == schema.fields().len()
                && planned
                    .fields()
                    .iter()
                    .zip(schema.fields())
                    .all(|(a, b)| a.name() == b.name() && a.data_type() == b.data_type()));
        if !same {
            let list = |s: &SchemaRef| {
                s.fields()
                    .iter()
                    .map(|f| format!("{} {}", f.name(), f.data_type()))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(PgError::SchemaChanged {
                table: table.to_owned(),
                planned: list(planned),
                batch: list(schema),
            });
        }
        Ok(Some(plan.clone()))
    }
}

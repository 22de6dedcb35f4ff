//! Foreign-key dependency planning: tables grouped into strongly connected components (a cycle of
//! foreign keys is one component; a self-reference is not a cycle between tables), components
//! ordered into levels — level 0 references nothing, level `n` only references levels `< n`.

use std::collections::HashMap;

/// The load plan of a set of tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Component of each table (index into `components`).
    pub component_of: Vec<usize>,
    /// Tables of each component.
    pub components: Vec<Vec<usize>>,
    /// Components each component references (other than itself), deduplicated.
    pub parents: Vec<Vec<usize>>,
    /// Level of each component.
    pub level: Vec<usize>,
}

impl Plan {
    /// Plans `n` tables with foreign-key edges `child -> parent` (indexes into the table list).
    pub(super) fn new(n: usize, edges: &[(usize, usize)]) -> Plan {
        let mut out: Vec<Vec<usize>> = vec![Vec::new(); n];
        for &(c, p) in edges {
            if c != p {
                out[c].push(p);
            }
        }
        let component_of = tarjan(n, &out);
        let count = component_of.iter().copied().max().map_or(0, |m| m + 1);
        let mut components = vec![Vec::new(); count];
        for (t, &c) in component_of.iter().enumerate() {
            components[c].push(t);
        }
        let mut parents = vec![Vec::new(); count];
        for (c, ps) in out.iter().enumerate() {
            for &p in ps {
                let (cc, pc) = (component_of[c], component_of[p]);
                if cc != pc && !parents[cc].contains(&pc) {
                    parents[cc].push(pc);
                }
            }
        }
        // Tarjan numbers components in reverse topological order of `child -> parent` edges: a
        // component's parents are numbered before it, so one pass in numbering order settles levels.
        let mut level = vec![0usize; count];
        for c in 0..count {
            level[c] = parents[c].iter().map(|&p| level[p] + 1).max().unwrap_or(0);
        }
        Plan { component_of, components, parents, level }
    }

    /// Table indexes per level.
    pub(super) fn levels(&self) -> Vec<Vec<usize>> {
        let depth = self.level.iter().copied().max().map_or(0, |m| m + 1);
        let mut levels = vec![Vec::new(); depth];
        for (c, tables) in self.components.iter().enumerate() {
            levels[self.level[c]].extend(tables.iter().copied());
        }
        for l in &mut levels {
            l.sort_unstable();
        }
        levels
    }

    /// Components with more than one table: foreign-key cycles between tables.
    pub(super) fn cycles(&self) -> impl Iterator<Item = &Vec<usize>> {
        self.components.iter().filter(|c| c.len() > 1)
    }
}

/// Tarjan's strongly connected components (iterative). Returns the component of each node, numbered
/// so that a component reachable from another gets the smaller number.
fn tarjan(n: usize, out: &[Vec<usize>]) -> Vec<usize> {
    const UNSEEN: usize = usize::MAX;
    let mut index = vec![UNSEEN; n];
    let mut low = vec![0usize; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut comp = vec![UNSEEN; n];
    let mut next_index = 0;
    let mut next_comp = 0;
    for root in 0..n {
        if index[root] != UNSEEN {
            continue;
        }
        // (node, next edge to look at)
        let mut call: Vec<(usize, usize)> = vec![(root, 0)];
        index[root] = next_index;
        low[root] = next_index;
        next_index += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(&mut (v, ref mut e)) = call.last_mut() {
            if let Some(&w) = out[v].get(*e) {
                *e += 1;
                if index[w] == UNSEEN {
                    index[w] = next_index;
                    low[w] = next_index;
                    next_index += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    call.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            call.pop();
            if let Some(&(u, _)) = call.last() {
                low[u] = low[u].min(low[v]);
            }
            if low[v] == index[v] {
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    comp[w] = next_comp;
                    if w == v {
                        break;
                    }
                }
                next_comp += 1;
            }
        }
    }
    comp
}

/// Builds `child -> parent` edges from table names.
pub(crate) fn edges<'a>(
    names: &[&'a str],
    parents: impl Iterator<Item = (usize, &'a str)>,
) -> Vec<(usize, usize)> {
    let pos: HashMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    parents.filter_map(|(c, p)| pos.get(p).map(|&p| (c, p))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_foreign_keys_and_cycles_share_a_component() {
        // 0 users, 1 posts (-> users, -> posts), 2 comments (-> posts, users), 3 a <-> 4 b (-> users)
        let edges = [(1, 0), (1, 1), (2, 1), (2, 0), (3, 4), (4, 3), (4, 0)];
        let plan = Plan::new(5, &edges);
        assert_eq!(plan.levels(), vec![vec![0], vec![1, 3, 4], vec![2]]);
        let cycles: Vec<_> = plan.cycles().cloned().collect();
        assert_eq!(cycles.len(), 1);
        let mut c = cycles[0].clone();
        c.sort_unstable();
        assert_eq!(c, vec![3, 4]);
        assert_eq!(Plan::new(0, &[]).levels(), Vec::<Vec<usize>>::new());
    }

    #[test]
    fn long_chain_does_not_recurse() {
        let edges: Vec<_> = (1..10_000).map(|i| (i, i - 1)).collect();
        let plan = Plan::new(10_000, &edges);
        assert_eq!(plan.levels().len(), 10_000);
    }
}

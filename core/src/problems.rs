//! Input problems gathered so that a command reports all of them at once, each naming its
//! field, instead of one per attempt: a user fixing a form sees every fault in one answer.
//! Only input problems are gathered; checks of state and authority still stop at the first.

/// Most problems one refusal lists (the rest are dropped: a form with more is rewritten anyway).
pub const MAX_PROBLEMS: usize = 32;

/// Problems found so far.
#[derive(Debug)]
pub struct Problems<E> {
    found: Vec<E>,
}

impl<E> Default for Problems<E> {
    fn default() -> Self {
        Problems { found: Vec::new() }
    }
}

impl<E> Problems<E> {
    /// None yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps the problem of a failed check.
    pub fn check(&mut self, result: Result<(), E>) {
        if let Err(problem) = result {
            self.push(problem);
        }
    }

    /// Keeps a problem (up to [`MAX_PROBLEMS`]).
    pub fn push(&mut self, problem: E) {
        if self.found.len() < MAX_PROBLEMS {
            self.found.push(problem);
        }
    }

    /// Whether any was found.
    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    /// `Ok` if none; the one problem itself if one; `several(all)` if more.
    pub fn finish(mut self, several: impl FnOnce(Vec<E>) -> E) -> Result<(), E> {
        match self.found.len() {
            0 => Ok(()),
            1 => Err(self.found.remove(0)),
            _ => Err(several(self.found)),
        }
    }
}

/// The problems' messages, numbered, for an error's text.
pub fn summary<E: std::fmt::Display>(problems: &[E]) -> String {
    problems.iter().enumerate().map(|(n, p)| format!("({}) {p}", n + 1)).collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_one_or_several_and_bounded() {
        let several = |all: Vec<String>| format!("{} problems", all.len());
        assert_eq!(Problems::<String>::new().finish(several), Ok(()));
        let mut one = Problems::new();
        one.check(Err("a".to_owned()));
        one.check(Ok(()));
        assert_eq!(one.finish(several), Err("a".to_owned()));
        let mut many = Problems::new();
        for n in 0..MAX_PROBLEMS + 5 {
            many.push(n.to_string());
        }
        assert_eq!(many.finish(several), Err(format!("{MAX_PROBLEMS} problems")));
        assert_eq!(summary(&["x", "y"]), "(1) x; (2) y");
    }
}

//! Relay paging for lists computed whole at one position: `first`/`after` forward,
//! `last`/`before` backward, `pageInfo` both ways. Where a cursor falls is the list's own
//! business (a key it is sorted by, or an offset in a list that cannot change), so a cursor
//! stays valid while the list grows at the head.

use async_graphql::SimpleObject;

use crate::server::errors::{bad_input, limit_exceeded};

/// Page size when `first` is not given.
pub const DEFAULT_PAGE_SIZE: usize = 100;

/// Checks `first` against `max_page_size`.
pub fn page_size(first: Option<i32>, max_page_size: usize) -> async_graphql::Result<usize> {
    counted("first", first, max_page_size)
}

/// Checks a page's count (`first` or `last`, named in the message) against `max_page_size`.
pub fn counted(name: &str, count: Option<i32>, max_page_size: usize) -> async_graphql::Result<usize> {
    let Some(count) = count else { return Ok(DEFAULT_PAGE_SIZE.min(max_page_size)) };
    if count < 1 {
        return Err(bad_input(format!("{name} must be at least 1, got {count}")));
    }
    let count = count as usize;
    if count > max_page_size {
        return Err(limit_exceeded("max_page_size", count as u64, max_page_size as u64));
    }
    Ok(count)
}

/// The four paging arguments.
#[derive(Clone, Debug, Default)]
pub struct PageArgs {
    /// At most this many from the start of the window.
    pub first: Option<i32>,
    /// The window starts after this cursor.
    pub after: Option<String>,
    /// At most this many from the end of the window.
    pub last: Option<i32>,
    /// The window ends before this cursor.
    pub before: Option<String>,
}

/// Where a page is, and what lies around it.
#[derive(SimpleObject, Clone, Debug, Default, PartialEq, Eq)]
#[graphql(name = "PageInfo")]
pub struct PageInfo {
    /// More items after this page.
    pub has_next_page: bool,
    /// More items before this page.
    pub has_previous_page: bool,
    /// Pass as `before` for the page before.
    pub start_cursor: Option<String>,
    /// Pass as `after` for the next page.
    pub end_cursor: Option<String>,
}

impl PageArgs {
    /// The index range of the page in a list of `total` items: `after_index(c)` is the index
    /// of the first item after cursor `c`, `before_index(c)` the index of the first item at or
    /// after it (the window's end). `first` and `last` are at most `max_page_size`; without
    /// either, the default page.
    pub fn range(
        &self,
        total: usize,
        max_page_size: usize,
        after_index: impl Fn(&str) -> async_graphql::Result<usize>,
        before_index: impl Fn(&str) -> async_graphql::Result<usize>,
    ) -> async_graphql::Result<(usize, usize)> {
        if self.first.is_some() && self.last.is_some() {
            return Err(bad_input("give first or last, not both"));
        }
        let start = self.after.as_deref().map(&after_index).transpose()?.unwrap_or(0).min(total);
        let end = self.before.as_deref().map(&before_index).transpose()?.unwrap_or(total).min(total).max(start);
        if self.last.is_some() {
            let last = counted("last", self.last, max_page_size)?;
            return Ok((end.saturating_sub(last).max(start), end));
        }
        let first = page_size(self.first, max_page_size)?;
        Ok((start, (start + first).min(end)))
    }
}

/// The page info of `start..end` in a list of `total`, with the cursor of an index.
pub fn page_info(start: usize, end: usize, total: usize, cursor: impl Fn(usize) -> String) -> PageInfo {
    PageInfo {
        has_next_page: end < total,
        has_previous_page: start > 0,
        start_cursor: (start < end).then(|| cursor(start)),
        end_cursor: (start < end).then(|| cursor(end - 1)),
    }
}

/// Offset cursors, for lists that cannot change (a diff between two positions, a baseline's
/// members): the cursor of the item at index `i` is `i + 1`.
pub fn offset_cursor(index: usize) -> String {
    (index + 1).to_string()
}

/// Where an offset cursor falls: (the index after it, the index it ends a window at).
pub fn offset_of(cursor: &str) -> async_graphql::Result<usize> {
    cursor.parse::<usize>().map_err(|_| bad_input(format!("{cursor:?} is not a cursor of this list")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(args: PageArgs, total: usize) -> (usize, usize) {
        let after = |c: &str| offset_of(c);
        let before = |c: &str| offset_of(c).map(|i| i.saturating_sub(1));
        args.range(total, 50, after, before).expect("range")
    }

    #[test]
    fn forward_and_backward_windows() {
        let args = |first: Option<i32>, after: Option<&str>, last: Option<i32>, before: Option<&str>| PageArgs {
            first,
            after: after.map(str::to_owned),
            last,
            before: before.map(str::to_owned),
        };
        assert_eq!(range(args(Some(3), None, None, None), 10), (0, 3));
        assert_eq!(range(args(Some(3), Some("3"), None, None), 10), (3, 6));
        assert_eq!(range(args(None, None, Some(3), None), 10), (7, 10));
        // Before the item at index 7 (cursor "8"): the three before it.
        assert_eq!(range(args(None, None, Some(3), Some("8")), 10), (4, 7));
        assert_eq!(range(args(Some(30), Some("8"), None, None), 10), (8, 10));
        assert_eq!(range(args(None, Some("2"), Some(30), Some("5")), 10), (2, 4));
        assert!(
            PageArgs { first: Some(1), last: Some(1), ..PageArgs::default() }
                .range(10, 50, offset_of, offset_of)
                .is_err()
        );
        assert!(PageArgs { first: Some(51), ..PageArgs::default() }.range(10, 50, offset_of, offset_of).is_err());
        let info = page_info(4, 7, 10, offset_cursor);
        assert_eq!(info.start_cursor.as_deref(), Some("5"));
        assert_eq!(info.end_cursor.as_deref(), Some("7"));
        assert!(info.has_next_page && info.has_previous_page);
    }
}

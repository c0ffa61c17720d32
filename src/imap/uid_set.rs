//! UID sets for `UID FETCH`, `UID STORE`, `UID MOVE` and `UID EXPUNGE`
//! (RFC 3501 section 9, `sequence-set`).

/// Returns sorted, distinct UIDs.
pub(crate) fn normalize(uids: &[u32]) -> Vec<u32> {
    let mut sorted = uids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    sorted
}

/// Writes sorted, distinct UIDs as ranges, such as `1:3,7,9:10`.
pub(crate) fn format(sorted: &[u32]) -> String {
    let mut set = String::new();
    let mut index = 0;
    while index < sorted.len() {
        let start = sorted[index];
        let mut end = start;
        while index + 1 < sorted.len() && sorted[index + 1] == end.wrapping_add(1) {
            index += 1;
            end = sorted[index];
        }
        if !set.is_empty() {
            set.push(',');
        }
        match start == end {
            true => set.push_str(&start.to_string()),
            false => set.push_str(&format!("{start}:{end}")),
        }
        index += 1;
    }

    set
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_joined() {
        assert_eq!(format(&[1, 2, 3, 7, 9, 10]), "1:3,7,9:10");
    }

    #[test]
    fn single_uid() {
        assert_eq!(format(&[42]), "42");
    }

    #[test]
    fn empty_set() {
        assert_eq!(format(&[]), "");
    }

    #[test]
    fn maximum_uid_does_not_wrap() {
        assert_eq!(format(&[0, u32::MAX]), format!("0,{}", u32::MAX));
    }

    #[test]
    fn normalize_sorts_and_dedups() {
        assert_eq!(normalize(&[5, 1, 5, 3]), [1, 3, 5]);
    }
}

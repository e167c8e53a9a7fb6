//! Text with `$name` (or `${name}`) variables, nginx's way, as the access
//! log's templates and a redirect's target write it; `$$` is a literal `$`.

/// A piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Piece<V> {
    /// Copied as is.
    Text(String),
    /// Replaced by a request's value.
    Var(V),
}

/// Splits `text` into literal pieces and the variables of `known` (name,
/// value). `within` names the text in messages (`the template`).
pub(super) fn parse<V: Copy>(
    text: &str,
    known: &[(&str, V)],
    within: &str,
) -> Result<Vec<Piece<V>>, String> {
    let mut out = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        literal.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            literal.push('$');
            rest = after;
            continue;
        }
        let (name, after) = match rest.strip_prefix('{') {
            Some(braced) => {
                let end = braced
                    .find('}')
                    .ok_or_else(|| format!("unclosed `${{` in {within}"))?;
                (&braced[..end], &braced[end + 1..])
            }
            None => {
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                (&rest[..end], &rest[end..])
            }
        };
        let var = known
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                let names: Vec<&str> = known.iter().map(|(n, _)| *n).collect();
                format!(
                    "unknown variable ${name} in {within} (known: ${})",
                    names.join(", $")
                )
            })?;
        if !literal.is_empty() {
            out.push(Piece::Text(std::mem::take(&mut literal)));
        }
        out.push(Piece::Var(var));
        rest = after;
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        out.push(Piece::Text(literal));
    }
    Ok(out)
}

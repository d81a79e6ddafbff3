//! Bindings of listeners to exchanges, with AMQP topic semantics: a routing key is words
//! joined by `.`; in a pattern `*` matches exactly one word and `#` zero or more. A binding
//! matches a message when its pattern matches the primary routing key or any CC key
//! (`route.<route>`), as a Pulse queue bound to the exchange would receive it. The queue's
//! listener API and `taskfold listen` read bindings alike.

use std::fmt;

use super::exchange::Exchange;

#[derive(Clone, PartialEq, Eq, Debug)]
enum Word {
    Literal(String),
    One,
    Any,
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Pattern(Vec<Word>);

impl Pattern {
    pub fn parse(pattern: &str) -> Result<Pattern, String> {
        if pattern.is_empty() {
            return Err("a routing key pattern cannot be empty; `#` matches every key".into());
        }
        let words = pattern
            .split('.')
            .map(|word| match word {
                "*" => Ok(Word::One),
                "#" => Ok(Word::Any),
                _ if word.contains(['*', '#']) => Err(format!(
                    "`{word}` in routing key pattern `{pattern}`: `*` and `#` must be whole words"
                )),
                _ => Ok(Word::Literal(word.to_string())),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Pattern(words))
    }

    pub fn matches(&self, key: &str) -> bool {
        if let [Word::Any] = self.0.as_slice() {
            return true;
        }
        let words: Vec<&str> = key.split('.').collect();
        matches_words(&self.0, &words)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, word) in self.0.iter().enumerate() {
            if index > 0 {
                formatter.write_str(".")?;
            }
            formatter.write_str(match word {
                Word::Literal(literal) => literal,
                Word::One => "*",
                Word::Any => "#",
            })?;
        }
        Ok(())
    }
}

/// Matching with backtracking over `#`; patterns are a handful of words, so the cost is small.
fn matches_words(pattern: &[Word], key: &[&str]) -> bool {
    match pattern.split_first() {
        None => key.is_empty(),
        Some((Word::Any, rest)) => (0..=key.len()).any(|skip| matches_words(rest, &key[skip..])),
        Some((Word::One, rest)) => !key.is_empty() && matches_words(rest, &key[1..]),
        Some((Word::Literal(literal), rest)) => {
            key.first() == Some(&literal.as_str()) && matches_words(rest, &key[1..])
        }
    }
}

#[derive(Clone, Debug)]
pub struct Binding {
    pub exchange: Exchange,
    pub pattern: Pattern,
}

impl Binding {
    pub fn parse(exchange: &str, routing_key_pattern: &str) -> Result<Binding, String> {
        let exchange = Exchange::parse(exchange).ok_or_else(|| {
            let known: Vec<&str> = Exchange::ALL
                .iter()
                .map(|exchange| exchange.name())
                .collect();
            format!(
                "unknown exchange `{exchange}`; the queue's exchanges are {}",
                known.join(", ")
            )
        })?;
        Ok(Binding {
            exchange,
            pattern: Pattern::parse(routing_key_pattern)?,
        })
    }

    /// Whether a message of `exchange` with this primary routing key and these routes (CC
    /// keys `route.<route>`) matches.
    pub fn matches_keys(&self, exchange: Exchange, routing_key: &str, routes: &[String]) -> bool {
        self.exchange == exchange
            && (self.pattern.matches(routing_key)
                || routes
                    .iter()
                    .any(|route| self.pattern.matches(&format!("route.{route}"))))
    }
}

/// `<exchange> <pattern>`: one binding's key, the same for bindings that match alike.
impl fmt::Display for Binding {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} {}", self.exchange, self.pattern)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, key: &str) -> bool {
        Pattern::parse(pattern).unwrap().matches(key)
    }

    #[test]
    fn star_is_one_word_and_hash_any_number() {
        assert!(matches("#", ""));
        assert!(matches("#", "a.b.c"));
        assert!(matches("a.*.c", "a.b.c"));
        assert!(!matches("a.*.c", "a.c"));
        assert!(!matches("a.*.c", "a.b.b.c"));
        assert!(matches("a.#.c", "a.c"));
        assert!(matches("a.#.c", "a.b.b.c"));
        assert!(matches("a.#", "a"));
        assert!(matches("#.c", "a.b.c"));
        assert!(!matches("#.c", "a.b.c.d"));
        assert!(matches("route.index.#", "route.index.project.latest"));
        assert!(!matches("route.index.#", "route.notify.x"));
        assert!(matches("*.*", "a.b"));
        assert!(!matches("*", "a.b"));
        assert!(matches(
            "primary.*.*.*.*.*.*.*.*._",
            "primary.t.0._._.p.w.s.g._"
        ));
        assert!(matches("#.on-failed.#", "route.notify.email.x.on-failed"));
    }

    #[test]
    fn bad_patterns_and_exchanges_are_refused() {
        assert!(Pattern::parse("").is_err());
        assert!(Pattern::parse("a.b*").is_err());
        assert!(Binding::parse("task-nothing", "#").is_err());
        assert!(Binding::parse("exchange/taskcluster-queue/v1/task-completed", "#").is_ok());
    }
}

//! Each quoting function against its format's own reader: serde-saphyr for
//! YAML, bash for shell words, a PowerShell tokenizer written here (pwsh is
//! not installed on the build machines), and inverse functions for HTML and
//! log fields. nftables strings are loaded by `nft` in `tests/firewall.rs`.

use proptest::prelude::*;

use super::*;

/// Any text, with the characters that matter to some format made likely.
pub(crate) fn hostile() -> impl Strategy<Value = String> {
    let special = prop::sample::select(vec![
        '\n',
        '\r',
        '\t',
        '\0',
        '\u{7f}',
        '\u{85}',
        '\u{2028}',
        '\u{2029}',
        '\u{feff}',
        '\u{202e}',
        '\'',
        '"',
        '`',
        '$',
        '\\',
        '#',
        '<',
        '>',
        '&',
        ';',
        '|',
        '{',
        '}',
        '(',
        ')',
        ':',
        '-',
        ' ',
        '\u{2018}',
        '\u{2019}',
        '\u{201a}',
        '\u{201b}',
        '\u{201c}',
        '\u{201d}',
        '\u{201e}',
        '@',
        '[',
        ']',
        '*',
        '!',
        '%',
        '~',
        'é',
        '\u{1f600}',
    ]);
    prop::collection::vec(
        prop_oneof![special, any::<char>(), prop::char::range('a', 'z')],
        0..24,
    )
    .prop_map(|cs| cs.into_iter().collect())
}

/// The inverse of [`log_field`].
fn unescape_log(s: &str) -> String {
    let mut out = String::new();
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('u') => {
                assert_eq!(it.next(), Some('{'));
                let hex: String = it.by_ref().take_while(|c| *c != '}').collect();
                out.push(char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap());
            }
            other => panic!("unknown escape {other:?} in {s:?}"),
        }
    }
    out
}

/// The inverse of [`html`], for the five entities it writes.
fn unescape_html(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// A PowerShell token, as far as the scripts portwatch writes need: the
/// tokenizer follows PowerShell's (`tokenizer.cs`) for comments, both kinds
/// of quote (typographic ones included), here-strings, line continuations
/// and statement ends; anything else is a bare word.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PsToken {
    /// A line or block comment.
    Comment(String),
    /// A single-quoted (verbatim) string, its value.
    Verbatim(String),
    /// A double-quoted or here-string: expandable, never written by portwatch.
    Expandable(String),
    /// A command name, parameter, number, operator or `,`.
    Word(String),
    /// A line break or `;`.
    End,
}

fn is_ps_double_quote(c: char) -> bool {
    matches!(c, '"' | '\u{201c}' | '\u{201d}' | '\u{201e}')
}

pub(crate) fn powershell_tokens(script: &str) -> Vec<PsToken> {
    let cs: Vec<char> = script.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let at = |i: usize| cs.get(i).copied().unwrap_or('\0');
    while i < cs.len() {
        let c = cs[i];
        match c {
            ' ' | '\t' | '\u{b}' | '\u{c}' | '\u{a0}' | '\u{85}' => i += 1,
            '\n' | '\r' | ';' => {
                out.push(PsToken::End);
                i += 1;
            }
            '`' if matches!(at(i + 1), '\n' | '\r') => i += 2, // line continuation
            '#' => {
                let end = (i..cs.len()).find(|j| matches!(cs[*j], '\n' | '\r'));
                let end = end.unwrap_or(cs.len());
                out.push(PsToken::Comment(cs[i + 1..end].iter().collect()));
                i = end;
            }
            '<' if at(i + 1) == '#' => {
                let end = (i + 2..cs.len()).find(|j| cs[*j] == '#' && at(j + 1) == '>');
                let end = end.unwrap_or(cs.len());
                out.push(PsToken::Comment(cs[i + 2..end].iter().collect()));
                i = end + 2;
            }
            '@' if is_powershell_single_quote(at(i + 1)) || is_ps_double_quote(at(i + 1)) => {
                out.push(PsToken::Expandable(cs[i..].iter().collect()));
                i = cs.len();
            }
            c if is_powershell_single_quote(c) => {
                let mut value = String::new();
                i += 1;
                while let Some(&c) = cs.get(i) {
                    if is_powershell_single_quote(c) {
                        if !is_powershell_single_quote(at(i + 1)) {
                            i += 1;
                            break;
                        }
                        i += 1;
                    }
                    value.push(cs[i]);
                    i += 1;
                }
                out.push(PsToken::Verbatim(value));
            }
            c if is_ps_double_quote(c) => {
                let mut value = String::new();
                i += 1;
                while i < cs.len() && !is_ps_double_quote(cs[i]) {
                    if cs[i] == '`' {
                        i += 1;
                    }
                    value.extend(cs.get(i));
                    i += 1;
                }
                i += 1;
                out.push(PsToken::Expandable(value));
            }
            ',' | '|' | '(' | ')' | '{' | '}' => {
                out.push(PsToken::Word(c.to_string()));
                i += 1;
            }
            _ => {
                let stop = |c: char| {
                    c.is_whitespace()
                        || "\n\r;#,|(){}`".contains(c)
                        || is_powershell_single_quote(c)
                        || is_ps_double_quote(c)
                };
                let end = (i..cs.len()).find(|j| stop(cs[*j])).unwrap_or(cs.len());
                let end = end.max(i + 1);
                out.push(PsToken::Word(cs[i..end].iter().collect()));
                i = end;
            }
        }
    }
    out
}

/// The statements of a script: its tokens between ends, comments left out.
pub(crate) fn powershell_statements(script: &str) -> Vec<Vec<PsToken>> {
    let mut out = vec![Vec::new()];
    for t in powershell_tokens(script) {
        match t {
            PsToken::End => out.push(Vec::new()),
            PsToken::Comment(_) => {}
            t => out.last_mut().unwrap().push(t),
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

#[test]
fn powershell_tokenizer_knows_the_quotes_that_close_a_string() {
    // U+2019 closes a string PowerShell opened with `'`.
    assert_eq!(
        powershell_statements("Write-Host 'it\u{2019}; Start-Process notepad.exe; #'"),
        vec![
            vec![
                PsToken::Word("Write-Host".into()),
                PsToken::Verbatim("it".into())
            ],
            vec![
                PsToken::Word("Start-Process".into()),
                PsToken::Word("notepad.exe".into())
            ],
        ]
    );
    assert_eq!(
        powershell_tokens("'a''b\u{2018}\u{2018}c'"),
        vec![PsToken::Verbatim("a'b\u{2018}c".into())]
    );
}

#[test]
fn the_reproducers_of_the_issue_stay_data() {
    let name = "x\nStart-Process notepad.exe\n#";
    assert_eq!(comment(name), "# x\\nStart-Process notepad.exe\\n#");
    let name = "x\u{2019} ; Start-Process notepad.exe ; \u{2019}";
    assert_eq!(
        powershell_tokens(&powershell_string(name)),
        vec![PsToken::Verbatim(name.into())]
    );
    let capture = "cap\nallow: []\n#.pcap";
    let doc = format!("{}\nsite: {}\n", comment(capture), yaml_scalar(capture));
    let v: BTreeMap<String, String> = serde_saphyr::from_str(&doc).unwrap();
    assert_eq!(v.len(), 1, "{doc}");
    assert_eq!(v["site"], capture);
}

use std::collections::BTreeMap;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn log_fields_are_one_line_and_reversible(s in hostile()) {
        let f = log_field(&s);
        prop_assert!(!f.chars().any(is_unsafe), "{f:?}");
        prop_assert_eq!(unescape_log(&f), s);
    }

    #[test]
    fn comments_are_one_comment_in_every_format(s in hostile()) {
        let c = comment(&s);
        prop_assert!(c.starts_with("# "));
        let breaks = ['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}'];
        prop_assert!(!c.contains(breaks), "{:?}", c);
        // PowerShell: one comment token; YAML: nothing but a comment.
        let ps = powershell_tokens(&format!("{c}\nGet-Date"));
        prop_assert_eq!(ps.len(), 3, "{:?}", ps);
        let yaml = format!("{c}\nk: v\n");
        let v: BTreeMap<String, String> = serde_saphyr::from_str(&yaml).unwrap();
        prop_assert_eq!(v.len(), 1);
    }

    /// A YAML mapping of quoted keys and values, each a line with a comment,
    /// reads back as exactly that mapping.
    #[test]
    fn yaml_scalars_read_back_exactly(pairs in prop::collection::btree_map(hostile(), hostile(), 0..6)) {
        let mut doc = String::new();
        for (k, v) in &pairs {
            doc.push_str(&format!("{}\n{}: {}\n", comment(k), yaml_scalar(k), yaml_scalar(v)));
        }
        if pairs.is_empty() {
            doc.push_str("{}\n");
        }
        let got: BTreeMap<String, String> = serde_saphyr::from_str(&doc)
            .map_err(|e| TestCaseError::fail(format!("{e}\n{doc}")))?;
        prop_assert_eq!(got, pairs);
    }

    #[test]
    fn powershell_strings_are_one_token_of_exactly_the_value(s in hostile(), t in hostile()) {
        let script = format!(
            "New-NetFirewallRule -DisplayName {} -Description {} | Out-Null\n",
            powershell_string(&s),
            powershell_string(&t)
        );
        let want = vec![vec![
            PsToken::Word("New-NetFirewallRule".into()),
            PsToken::Word("-DisplayName".into()),
            PsToken::Verbatim(s.clone()),
            PsToken::Word("-Description".into()),
            PsToken::Verbatim(t.clone()),
            PsToken::Word("|".into()),
            PsToken::Word("Out-Null".into()),
        ]];
        prop_assert_eq!(powershell_statements(&script), want);
    }

    #[test]
    fn html_text_has_no_markup_and_reads_back(s in hostile()) {
        let h = html(&s);
        prop_assert!(!h.contains(['<', '>', '"', '\'']));
        prop_assert_eq!(unescape_html(&h), s);
    }

    #[test]
    fn nft_strings_are_one_line_without_inner_quotes(s in hostile()) {
        let n = nft_string(&s);
        prop_assert!(n.len() <= NFT_COMMENT_MAX + 2);
        prop_assert!(n.starts_with('"') && n.ends_with('"'));
        let inner = &n[1..n.len() - 1];
        prop_assert!(!inner.contains('"') && !inner.chars().any(is_unsafe));
    }
}

proptest! {
    // One bash process per case.
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn shell_words_read_back_exactly_in_bash(s in hostile()) {
        let s = s.replace('\0', "");
        let word = shell_word(&s);
        prop_assert!(!word.contains(['\n', '\r']));
        let out = std::process::Command::new("bash")
            .args(["-c", &format!("printf %s {word}")])
            .output()
            .expect("bash runs");
        prop_assert!(out.status.success(), "{word}");
        prop_assert_eq!(String::from_utf8_lossy(&out.stdout), s);
    }
}

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

/// The inverse of [`html`], for the four entities it writes.
fn unescape_html(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

/// A PowerShell token, as far as the scripts portwatch writes need: the
/// tokenizer follows PowerShell's (`tokenizer.cs`) for comments (line,
/// block, `#Requires`), both kinds of quote (typographic ones included) with
/// their escapes (a doubled quote; a backtick in double quotes),
/// here-strings, variables, line continuations, brackets (`(`, `{`, `[`,
/// `@(`, `@{`, `$(`) and statement ends; anything else is a bare word.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PsToken {
    /// A line or block comment (`#Requires` lines too).
    Comment(String),
    /// A single-quoted (verbatim) string or here-string, its value.
    Verbatim(String),
    /// A double-quoted string or here-string: expandable, its raw text.
    Expandable(String),
    /// `$name` or `${name}`.
    Variable(String),
    /// A command name, parameter, number, operator, bracket or `,`.
    Word(String),
    /// A line break or `;`.
    End,
}

fn is_ps_double_quote(c: char) -> bool {
    matches!(c, '"' | '\u{201c}' | '\u{201d}' | '\u{201e}')
}

/// The tokens of a script; strings, here-strings and block comments left
/// open end the script (see [`powershell_tokens_checked`]).
pub(crate) fn powershell_tokens(script: &str) -> Vec<PsToken> {
    tokenize(script).0
}

/// The tokens of a script that PowerShell's parser would take whole: every
/// string, here-string and block comment closed, every bracket closed by
/// its own kind, in order.
pub(crate) fn powershell_tokens_checked(script: &str) -> Result<Vec<PsToken>, String> {
    let (tokens, open) = tokenize(script);
    if let Some(what) = open {
        return Err(format!("unterminated {what}"));
    }
    let mut stack: Vec<&str> = Vec::new();
    for t in &tokens {
        if let PsToken::Word(w) = t {
            match w.as_str() {
                "(" | "@(" | "$(" => stack.push(")"),
                "{" | "@{" => stack.push("}"),
                "[" => stack.push("]"),
                ")" | "}" | "]" if stack.pop() != Some(w.as_str()) => {
                    return Err(format!("unbalanced `{w}` in {tokens:?}"));
                }
                _ => {}
            }
        }
    }
    if !stack.is_empty() {
        return Err(format!("unclosed brackets, expecting {stack:?}"));
    }
    Ok(tokens)
}

/// The tokens, and what was left open at the end of the script.
fn tokenize(script: &str) -> (Vec<PsToken>, Option<&'static str>) {
    let cs: Vec<char> = script.chars().collect();
    let mut out = Vec::new();
    let mut open = None;
    let mut i = 0;
    let at = |i: usize| cs.get(i).copied().unwrap_or('\0');
    let is_break = |c: char| matches!(c, '\n' | '\r');
    while i < cs.len() {
        let c = cs[i];
        match c {
            ' ' | '\t' | '\u{b}' | '\u{c}' | '\u{a0}' | '\u{85}' => i += 1,
            '\n' | '\r' | ';' => {
                out.push(PsToken::End);
                i += 1;
            }
            '`' if is_break(at(i + 1)) => {
                // Line continuation: a backtick right before the line break.
                i += if at(i + 1) == '\r' && at(i + 2) == '\n' {
                    3
                } else {
                    2
                };
            }
            '#' => {
                let end = (i..cs.len()).find(|j| is_break(cs[*j]));
                let end = end.unwrap_or(cs.len());
                out.push(PsToken::Comment(cs[i + 1..end].iter().collect()));
                i = end;
            }
            '<' if at(i + 1) == '#' => {
                let end = (i + 2..cs.len()).find(|j| cs[*j] == '#' && at(j + 1) == '>');
                if end.is_none() {
                    open = Some("block comment");
                }
                let end = end.unwrap_or(cs.len());
                out.push(PsToken::Comment(cs[i + 2..end].iter().collect()));
                i = end + 2;
            }
            '@' if is_powershell_single_quote(at(i + 1)) || is_ps_double_quote(at(i + 1)) => {
                // A here-string: `@'` then a line break; it ends at a line
                // that starts with `'@`.
                let verbatim = is_powershell_single_quote(at(i + 1));
                let closes = |c: char| match verbatim {
                    true => is_powershell_single_quote(c),
                    false => is_ps_double_quote(c),
                };
                let mut j = i + 2;
                while matches!(at(j), ' ' | '\t') {
                    j += 1;
                }
                if !is_break(at(j)) {
                    open = Some("here-string (text after its opening quote)");
                    break;
                }
                j += if at(j) == '\r' && at(j + 1) == '\n' {
                    2
                } else {
                    1
                };
                let start = j;
                let end = (start..cs.len())
                    .find(|k| is_break(cs[*k]) && closes(at(k + 1)) && at(k + 2) == '@');
                let Some(end) = end else {
                    open = Some("here-string");
                    break;
                };
                let value: String = cs[start..end].iter().collect();
                out.push(match verbatim {
                    true => PsToken::Verbatim(value),
                    false => PsToken::Expandable(value),
                });
                i = end + 3;
            }
            '@' if matches!(at(i + 1), '(' | '{') => {
                out.push(PsToken::Word(format!("@{}", at(i + 1))));
                i += 2;
            }
            '$' if at(i + 1) == '(' => {
                out.push(PsToken::Word("$(".into()));
                i += 2;
            }
            '$' if at(i + 1) == '{' => {
                let end = (i + 2..cs.len()).find(|j| cs[*j] == '}');
                let Some(end) = end else {
                    open = Some("${ variable");
                    break;
                };
                out.push(PsToken::Variable(cs[i + 2..end].iter().collect()));
                i = end + 1;
            }
            '$' if at(i + 1).is_alphanumeric() || matches!(at(i + 1), '_' | '?' | '^') => {
                let mut end = i + 2;
                while at(end).is_alphanumeric() || matches!(at(end), '_' | ':') {
                    end += 1;
                }
                out.push(PsToken::Variable(cs[i + 1..end].iter().collect()));
                i = end;
            }
            c if is_powershell_single_quote(c) => {
                let mut value = String::new();
                let mut closed = false;
                i += 1;
                while let Some(&c) = cs.get(i) {
                    if is_powershell_single_quote(c) {
                        if !is_powershell_single_quote(at(i + 1)) {
                            i += 1;
                            closed = true;
                            break;
                        }
                        i += 1;
                    }
                    value.push(cs[i]);
                    i += 1;
                }
                if !closed {
                    open = Some("single-quoted string");
                }
                out.push(PsToken::Verbatim(value));
            }
            c if is_ps_double_quote(c) => {
                let mut value = String::new();
                let mut closed = false;
                i += 1;
                while let Some(&c) = cs.get(i) {
                    if c == '`' {
                        // An escape: the next character is literal.
                        value.push(c);
                        value.extend(cs.get(i + 1));
                        i += 2;
                        continue;
                    }
                    if is_ps_double_quote(c) {
                        if !is_ps_double_quote(at(i + 1)) {
                            i += 1;
                            closed = true;
                            break;
                        }
                        i += 1;
                    }
                    value.push(cs[i]);
                    i += 1;
                }
                if !closed {
                    open = Some("double-quoted string");
                }
                out.push(PsToken::Expandable(value));
            }
            ',' | '|' | '(' | ')' | '{' | '}' | '[' | ']' => {
                out.push(PsToken::Word(c.to_string()));
                i += 1;
            }
            _ => {
                let stop = |c: char| {
                    c.is_whitespace()
                        || "\n\r;#,|(){}[]`".contains(c)
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
    (out, open)
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
fn powershell_tokenizer_reads_here_strings_escapes_variables_and_brackets() {
    use PsToken::*;
    let w = |s: &str| Word(s.to_string());
    let script = "#Requires -RunAsAdministrator\n\
                  [CmdletBinding(SupportsShouldProcess)]\n\
                  param([string] $Stage = 'Audit')\n\
                  $a = @'\nit's # not a comment\n'@\n\
                  $b = \"say `\"hi`\" \"\"x\"\"\" + ${odd name}\n\
                  Get-X -A 1 `\n  -B @{ K = $_ } <# block\n comment #>";
    let tokens = powershell_tokens_checked(script).unwrap();
    assert_eq!(
        tokens,
        vec![
            Comment("Requires -RunAsAdministrator".into()),
            End,
            w("["),
            w("CmdletBinding"),
            w("("),
            w("SupportsShouldProcess"),
            w(")"),
            w("]"),
            End,
            w("param"),
            w("("),
            w("["),
            w("string"),
            w("]"),
            Variable("Stage".into()),
            w("="),
            Verbatim("Audit".into()),
            w(")"),
            End,
            Variable("a".into()),
            w("="),
            Verbatim("it's # not a comment".into()),
            End,
            Variable("b".into()),
            w("="),
            Expandable("say `\"hi`\" \"x\"".into()),
            w("+"),
            Variable("odd name".into()),
            End,
            w("Get-X"),
            w("-A"),
            w("1"),
            w("-B"),
            w("@{"),
            w("K"),
            w("="),
            Variable("_".into()),
            w("}"),
            Comment(" block\n comment ".into()),
        ]
    );
}

#[test]
fn powershell_tokenizer_finds_what_is_left_open() {
    for (script, why) in [
        ("Get-X 'open", "unterminated single-quoted string"),
        ("Get-X \"open `\"", "unterminated double-quoted string"),
        ("$a = @'\ntext\n", "unterminated here-string"),
        ("<# open", "unterminated block comment"),
        ("if ($a) { Get-X", "unclosed brackets"),
        ("Get-X (1]", "unbalanced `]`"),
        ("Get-X @(1", "unclosed brackets"),
    ] {
        let e = powershell_tokens_checked(script).unwrap_err();
        assert!(e.starts_with(why), "{script:?}: {e}");
    }
    // Quote characters in a comment or inside the other quote are text.
    assert!(powershell_tokens_checked("# it's\nGet-X \"it's\" '\"'").is_ok());
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

    /// The script's own parameters and variables with hostile defaults
    /// and values: each value one string token, the brackets balanced.
    #[test]
    fn powershell_param_blocks_keep_each_value_one_token(s in hostile(), t in hostile()) {
        let script = format!(
            "[CmdletBinding(SupportsShouldProcess)]\nparam(\n    [string] $PolicyStore = {},\n    \
             [string[]] $FirewallProfile = @({})\n)\n$Group = {}\n\
             if ($Old.Count -gt 0) {{\n    Remove-NetFirewallRule -Name $Old.Name -PolicyStore $PolicyStore\n}}\n",
            powershell_string(&s),
            powershell_string(&t),
            powershell_string(&s),
        );
        let tokens = powershell_tokens_checked(&script)
            .map_err(|e| TestCaseError::fail(format!("{e}\n{script}")))?;
        let strings: Vec<PsToken> = tokens
            .iter()
            .filter(|t| matches!(t, PsToken::Verbatim(_) | PsToken::Expandable(_)))
            .cloned()
            .collect();
        let want = vec![
            PsToken::Verbatim(s.clone()),
            PsToken::Verbatim(t.clone()),
            PsToken::Verbatim(s.clone()),
        ];
        prop_assert_eq!(strings, want);
        let vars = tokens.iter().filter(|t| matches!(t, PsToken::Variable(_))).count();
        prop_assert_eq!(vars, 6);
    }

    #[test]
    fn html_text_has_no_markup_and_reads_back(s in hostile()) {
        let h = html(&s);
        prop_assert!(!h.contains(['<', '>', '"']));
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

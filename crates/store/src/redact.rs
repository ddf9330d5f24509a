//! Printing errors that may hold a presigned URL. A presigned URL is a credential until it
//! expires (whoever reads it may PUT or GET the object), and HTTP errors quote the URL they were
//! sending to. Every binary prints its errors through [`error_chain`].

/// `e` and all its causes, `: `-separated (reqwest's own text stops at "error sending request":
/// the cause, refused or TLS, is below), with the query of every signed URL removed.
pub fn error_chain(e: &(dyn std::error::Error + '_)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    without_signatures(&s)
}

/// `text` with the query string of every URL that carries a SigV4 signature (`X-Amz-...`
/// parameters) cut, from its `?` to the end of the URL (whitespace, a quote or a bracket).
pub fn without_signatures(text: &str) -> String {
    let ends_url = |c: char| c.is_whitespace() || matches!(c, ')' | '"' | '\'' | '>' | ']');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(q) = rest.find('?') {
        let url_end = rest[q..].find(ends_url).map_or(rest.len(), |i| q + i);
        out.push_str(&rest[..q]);
        if !rest[q..url_end].contains("X-Amz-") {
            out.push_str(&rest[q..url_end]);
        }
        rest = &rest[url_end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_queries_are_cut_and_the_rest_kept() {
        let e = std::io::Error::other(
            "error sending request for url (https://s3/b/core.zst?uploadId=7&X-Amz-Signature=secret): refused? yes",
        );
        assert_eq!(error_chain(&e), "error sending request for url (https://s3/b/core.zst): refused? yes");
        assert_eq!(
            without_signatures("GET http://h/k?X-Amz-Credential=a%2Fb&X-Amz-Signature=s failed, see http://h/?page=2"),
            "GET http://h/k failed, see http://h/?page=2"
        );
    }

    #[test]
    fn causes_are_chained() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("uploading core.42.zst")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Outer(std::io::Error::other("connection refused"));
        assert_eq!(error_chain(&e), "uploading core.42.zst: connection refused");
    }
}

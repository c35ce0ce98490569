//! `tls-server-end-point` channel-binding data (RFC 5929 section 4.1): a hash of the server's
//! certificate, with the certificate's own signature hash, or SHA-256 when that is MD5, SHA-1
//! or something without a separate hash.

use sha2::{Digest, Sha256, Sha384, Sha512};

use crate::WireError;

const BAD_CERT: WireError = WireError::Malformed("cannot parse the server certificate (DER)");

/// DER OIDs of the signature algorithms whose hash is stronger than SHA-256.
const SHA384_SIGS: [&[u8]; 2] = [
    // sha384WithRSAEncryption 1.2.840.113549.1.1.12
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c],
    // ecdsa-with-SHA384 1.2.840.10045.4.3.3
    &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03],
];
const SHA512_SIGS: [&[u8]; 2] = [
    // sha512WithRSAEncryption 1.2.840.113549.1.1.13
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d],
    // ecdsa-with-SHA512 1.2.840.10045.4.3.4
    &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04],
];

/// The hash `tls-server-end-point` uses for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndPointHash {
    /// SHA-256 (also for MD5 and SHA-1 signatures, and for algorithms without a hash).
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

/// Which hash the certificate's signature algorithm calls for.
pub fn end_point_hash(cert_der: &[u8]) -> Result<EndPointHash, WireError> {
    // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm AlgorithmIdentifier, ... }
    let (tag, cert, _) = tlv(cert_der)?;
    if tag != 0x30 {
        return Err(BAD_CERT);
    }
    let (_, _tbs, rest) = tlv(cert)?;
    // AlgorithmIdentifier ::= SEQUENCE { algorithm OBJECT IDENTIFIER, parameters ANY OPTIONAL }
    let (tag, alg, _) = tlv(rest)?;
    if tag != 0x30 {
        return Err(BAD_CERT);
    }
    let (tag, oid, _) = tlv(alg)?;
    if tag != 0x06 {
        return Err(BAD_CERT);
    }
    Ok(if SHA384_SIGS.contains(&oid) {
        EndPointHash::Sha384
    } else if SHA512_SIGS.contains(&oid) {
        EndPointHash::Sha512
    } else {
        EndPointHash::Sha256
    })
}

/// The `tls-server-end-point` channel-binding data for a server certificate (DER).
pub fn tls_server_end_point(cert_der: &[u8]) -> Result<Vec<u8>, WireError> {
    Ok(match end_point_hash(cert_der)? {
        EndPointHash::Sha256 => Sha256::digest(cert_der).to_vec(),
        EndPointHash::Sha384 => Sha384::digest(cert_der).to_vec(),
        EndPointHash::Sha512 => Sha512::digest(cert_der).to_vec(),
    })
}

/// Splits one DER TLV off `input`: (tag, contents, rest).
fn tlv(input: &[u8]) -> Result<(u8, &[u8], &[u8]), WireError> {
    let (&tag, rest) = input.split_first().ok_or(BAD_CERT)?;
    let (&first, rest) = rest.split_first().ok_or(BAD_CERT)?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return Err(BAD_CERT);
        }
        let (len_bytes, rest) = rest.split_at_checked(n).ok_or(BAD_CERT)?;
        let len = len_bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, rest)
    };
    let (contents, rest) = rest.split_at_checked(len).ok_or(BAD_CERT)?;
    Ok((tag, contents, rest))
}

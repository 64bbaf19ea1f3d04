"""Go's choice of client certificate, as pure functions (:mod:`dockercerts.gochoice`), the
raw issuer names it compares (:func:`dockercerts.scan.tbs_names`), and the candidate order
of ``order="ca-names"`` (:func:`dockercerts._hosts.listed_first`).

What real Go does on the wire is checked against skopeo in ``test_canames.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import given
from hypothesis import strategies as st

from dockercerts import load_dir
from dockercerts._hosts import listed_first
from dockercerts.gochoice import go_sends, issuer_listed, leaf_without_intermediate
from dockercerts.scan import tbs_names
from dockercerts.testing import CA, CertsD

# Names are opaque bytes to Go: a handful of short ones make collisions likely.
NAMES = st.sampled_from([b"root", b"issuing", b"other", b"decoy", b"x"])
CHAIN = st.lists(NAMES, min_size=1, max_size=3)


@pytest.fixture(scope="module")
def tree() -> tuple[CA, CA, CA]:
    root = CA(name="gochoice root")
    return root, root.intermediate("gochoice issuing"), CA(name="gochoice other")


# --- the raw names ----------------------------------------------------------------------------


def test_tbs_names_are_the_bytes_in_the_certificate(tree: tuple[CA, CA, CA]) -> None:
    root, issuing, _ = tree
    leaf = issuing.issue_client("bob")
    issuer, subject = tbs_names(leaf.certificate.tbs_certificate_bytes)
    assert issuer == issuing.certificate.subject.public_bytes()
    assert subject == leaf.certificate.subject.public_bytes()
    assert (
        tbs_names(root.certificate.tbs_certificate_bytes)
        == (root.certificate.subject.public_bytes(),) * 2
    )
    # The bytes come from inside the TBS, not from a re-encoding.
    tbs = leaf.certificate.tbs_certificate_bytes
    assert issuer in tbs
    assert subject in tbs


@pytest.mark.parametrize("cut", [1, 5, 40])
def test_tbs_names_refuses_a_truncated_tbs(tree: tuple[CA, CA, CA], cut: int) -> None:
    tbs = tree[0].certificate.tbs_certificate_bytes
    with pytest.raises(ValueError, match=r"truncated|without issuer"):
        tbs_names(tbs[:cut])


def test_scan_records_every_issuer_of_the_cert_file(
    tree: tuple[CA, CA, CA], certs_d: CertsD
) -> None:
    root, issuing, _ = tree
    host = certs_d.host("reg:5000")
    host.pair("a-chain", issuing.issue_client("a"))
    host.pair("b-leaf", issuing.issue_client("b", include_chain=False))
    host.pair("c-root", root.issue_client("c"))
    pairs = load_dir(host.path).pairs
    subject = {ca: ca.certificate.subject.public_bytes() for ca in (root, issuing)}
    assert [p.chain_issuers for p in pairs] == [
        (subject[issuing], subject[root]),
        (subject[issuing],),
        (subject[root],),
    ]
    # Not in reprs: they are bytes nobody wants to read there.
    assert "chain_issuers" not in repr(pairs[0])


# --- Go's choice ------------------------------------------------------------------------------


def test_go_sends_the_first_listed_pair_the_first_without_names_none_without_a_match() -> None:
    chains = [[b"other"], [b"issuing", b"root"], [b"root"]]
    assert go_sends(chains, [b"root"]) == 1
    assert go_sends(chains, [b"decoy", b"root", b"other"]) == 0
    assert go_sends(chains, []) == 0
    assert go_sends(chains, [b"decoy"]) is None
    assert go_sends(chains, None) is None  # no CertificateRequest: nothing is sent
    assert go_sends([], [b"root"]) is None
    assert go_sends([], []) is None


def _go_reference(
    chains: Sequence[Sequence[bytes]], names: Optional[Sequence[bytes]]
) -> Optional[int]:
    """Go's loop as written in crypto/tls: per pair, per certificate, per name."""
    if names is None:
        return None
    for index, chain in enumerate(chains):
        if not names:
            return index
        for issuer in chain:
            for name in names:
                if issuer == name:
                    return index
    return None


@given(st.lists(CHAIN, max_size=6), st.none() | st.lists(NAMES, max_size=4))
def test_go_sends_matches_gos_loop(chains: list[list[bytes]], names: Optional[list[bytes]]) -> None:
    assert go_sends(chains, names) == _go_reference(chains, names)


@given(CHAIN, st.lists(NAMES, max_size=4))
def test_issuer_listed_is_a_non_empty_intersection(chain: list[bytes], names: list[bytes]) -> None:
    assert issuer_listed(chain, set(names)) == bool(set(chain) & set(names))


# --- the order of order="ca-names" ------------------------------------------------------------


@given(st.lists(CHAIN, max_size=7), st.lists(NAMES, max_size=3))
def test_listed_first_puts_listed_pairs_first_in_dockers_order(
    chains: list[list[bytes]], names: list[bytes]
) -> None:
    items = tuple(range(len(chains)))
    order = listed_first(items, lambda i: chains[i], tuple(names))
    assert sorted(order) == list(items)  # a permutation: nothing dropped, nothing added
    listed = [i for i in items if set(chains[i]) & set(names)]
    others = [i for i in items if i not in listed]
    assert list(order) == listed + others  # each group keeps Docker's order
    if listed:
        # The first tried is the one Go sends.
        assert order[0] == go_sends(chains, names)


def test_listed_first_without_names_is_dockers_order() -> None:
    assert listed_first((1, 2, 3), lambda i: [b"x"], ()) == (1, 2, 3)


# --- moby#21148 -------------------------------------------------------------------------------


def test_leaf_without_intermediate(tree: tuple[CA, CA, CA], certs_d: CertsD) -> None:
    root, issuing, other = tree
    deeper = issuing.intermediate("gochoice deeper")
    host = certs_d.host("reg:5000").ca(root).ca(issuing, "issuing.crt").ca(deeper, "deeper.crt")
    host.pair("a-leaf", issuing.issue_client("a", include_chain=False))
    host.pair("b-chain", issuing.issue_client("b"))
    host.pair("c-root", root.issue_client("c"))
    host.pair("d-other", other.issue_client("d"))
    # leaf + "deeper" but not "issuing", which issued "deeper".
    partial = deeper.issue_client("e")
    host.file("e-partial.cert", partial.leaf_pem + deeper.cert_pem)
    host.key_only("e-partial", partial)
    certs = load_dir(host.path)
    warnings = leaf_without_intermediate(certs.pairs, certs.ca_certificates)
    assert [(Path(w.path).name, w.code) for w in warnings] == [
        ("a-leaf.cert", "leaf-without-intermediate"),
        ("e-partial.cert", "leaf-without-intermediate"),
    ]
    assert "holds only the leaf, issued by the intermediate CN=gochoice issuing" in (
        warnings[0].message
    )
    assert "holds 2 certificates" in warnings[1].message
    assert "append that intermediate to a-leaf.cert" in warnings[0].fix
    # Without the intermediate among the .crt files nothing can tell it from a root.
    root_only = [root.certificate.public_bytes(Encoding.DER)]
    assert leaf_without_intermediate(certs.pairs, root_only) == ()

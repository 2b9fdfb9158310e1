"""Reviewer accounts and login sessions, stored in the review queue's own database.

Why this shape:
- A token is `<token_id>.<secret>`: the public id finds the account in one indexed lookup, the secret is
  checked against a salted scrypt hash. Only hashes are stored, so a copied database grants no access.
- scrypt is deliberately slow (tens of ms), too slow to run on every request of a reviewer who answers a
  task every few seconds; a verified token is therefore remembered in memory (by its SHA-256) for a
  minute. The memory only saves the scrypt: every request still reads the account row, so a token that
  was replaced, disabled or has expired (`token_ttl_s` after it was issued) is refused at once, in every
  process that serves the database.
- A session is opened in the same transaction that re-reads the account, so a token replaced while its
  login was being checked opens none; replacing or disabling a user deletes their sessions.
- Sessions (the browser's HttpOnly cookie) are random 256-bit ids; a fast SHA-256 of them is enough for
  storage because they cannot be guessed, and it keeps the lookup a primary-key read.
- Tables live in their own metadata, created next to the queue's tables on the same URL, so a team's
  Postgres holds accounts, tasks and answers together.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON, Boolean, Engine, Float, String, delete, select, update
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from conceptengine.review.answers import KINDS
from conceptengine.review.consensus import ADJUDICATE
from conceptengine.review.db import make_engine, normalize_url, read_tx, write_tx

ROLES: tuple[str, ...] = ("reviewer", "admin")
SESSION_TTL_S = 12 * 3600.0  # one working day
TOKEN_TTL_S = 30 * 86400.0  # review.token_ttl_days' default
_TOKEN_CACHE_S = 60.0
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
# scrypt cost: ~16 MiB and a few tens of ms per check; only logins and cold bearer tokens pay it.
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "maxmem": 64 * 1024 * 1024, "dklen": 32}
_DECOY_SALT = "00" * 16


class _Base(DeclarativeBase):
    pass


class UserRecord(_Base):
    __tablename__ = "review_users"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_id: Mapped[str] = mapped_column(String(32), unique=True, nullable=False)
    salt: Mapped[str] = mapped_column(String(64), nullable=False)
    token_hash: Mapped[str] = mapped_column(String(128), nullable=False)
    role: Mapped[str] = mapped_column(String(16), nullable=False)
    kinds: Mapped[list[str]] = mapped_column(JSON, nullable=False)
    disabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    created_at: Mapped[float] = mapped_column(Float, nullable=False)


class SessionRecord(_Base):
    __tablename__ = "review_sessions"

    session_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), nullable=False)
    expires_at: Mapped[float] = mapped_column(Float, nullable=False)


_U = UserRecord.__table__
_S = SessionRecord.__table__


class AccountError(ValueError):
    """A bad account request (name, role, kinds); the message names the field to fix."""


@dataclass(frozen=True)
class User:
    name: str
    role: str
    kinds: tuple[str, ...]

    @property
    def worker_id(self) -> str:
        """The annotator recorded with this user's answers, in the verdict table's `human:ID` convention."""
        return f"human:{self.name}"

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def allowed_kinds(self) -> tuple[str, ...]:
        """Kinds this user may lease and answer: their assigned kinds, plus consensus disputes for admins."""
        return self.kinds + ((ADJUDICATE,) if self.is_admin else ())

    def public(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "kinds": list(self.kinds)}


def _scrypt(secret: str, salt: str) -> str:
    return hashlib.scrypt(secret.encode(), salt=bytes.fromhex(salt), **_SCRYPT).hex()


def _sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def check_user_fields(name: Any, role: Any, kinds: Any) -> tuple[str, str, tuple[str, ...]]:
    if not isinstance(name, str) or not _NAME.match(name):
        raise AccountError(
            f"name: {name!r} must be 1-64 characters of lower-case letters, digits, '_', '.' or '-'"
        )
    if role not in ROLES:
        raise AccountError(f"role: {role!r} is not one of {list(ROLES)}")
    if isinstance(kinds, str) or not isinstance(kinds, (list, tuple)) or not kinds:
        raise AccountError(f"kinds: must be a non-empty list of task kinds from {list(KINDS)}, got {kinds!r}")
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise AccountError(f"kinds: unknown task kind {bad[0]!r}; expected some of {list(KINDS)}")
    return name, role, tuple(k for k in KINDS if k in kinds)  # canonical order, no repeats


class Accounts:
    """Users and sessions on the review database at `url` (the queue's URL)."""

    def __init__(self, url: str, clock: Any = time.time, token_ttl_s: float = TOKEN_TTL_S) -> None:
        self.url = normalize_url(url)
        self._clock = clock
        self.token_ttl_s = token_ttl_s
        self._engine: Engine = make_engine(self.url)
        with write_tx(self._engine) as conn:
            _Base.metadata.create_all(conn)
        self._cache: dict[str, tuple[str, float]] = {}  # sha(token) -> (the token hash it matched, until)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._engine.dispose()

    # -- users -----------------------------------------------------------------------------------

    def add_user(self, name: str, role: str, kinds: list[str], replace: bool = False) -> str:
        """Create (or with `replace`, re-issue) an account; returns its token, which is never stored."""
        name, role, kinds_t = check_user_fields(name, role, kinds)
        token_id, secret, salt = secrets.token_hex(8), secrets.token_urlsafe(32), secrets.token_hex(16)
        row = {
            "name": name,
            "token_id": token_id,
            "salt": salt,
            "token_hash": _scrypt(secret, salt),
            "role": role,
            "kinds": list(kinds_t),
            "disabled": False,
            "created_at": self._clock(),
        }
        with write_tx(self._engine) as conn:
            exists = conn.scalar(select(_U.c.name).where(_U.c.name == name)) is not None
            if exists and not replace:
                raise AccountError(f"name: user {name!r} already exists; pass --replace to issue a new token")
            if exists:
                conn.execute(update(_U).where(_U.c.name == name).values(**row))
                conn.execute(delete(_S).where(_S.c.name == name))  # a new token ends old sessions
            else:
                conn.execute(_U.insert(), row)
        return f"{token_id}.{secret}"

    def set_disabled(self, name: str, disabled: bool = True) -> None:
        with write_tx(self._engine) as conn:
            res = conn.execute(update(_U).where(_U.c.name == name).values(disabled=disabled))
            if res.rowcount != 1:
                raise AccountError(f"name: no user {name!r}")
            if disabled:
                conn.execute(delete(_S).where(_S.c.name == name))

    def users(self) -> list[User]:
        with read_tx(self._engine) as conn:
            rows = conn.execute(select(_U).order_by(_U.c.name)).all()
        return [User(r.name, r.role, tuple(r.kinds)) for r in rows if not r.disabled]

    # -- tokens and sessions ---------------------------------------------------------------------

    def verify_token(self, token: Any) -> User | None:
        """The active user this token belongs to, or None (malformed, unknown, wrong secret, replaced,
        disabled or expired)."""
        if not isinstance(token, str) or token.count(".") != 1 or len(token) > 256:
            return None
        with read_tx(self._engine) as conn:
            row = conn.execute(select(_U).where(_U.c.token_id == token.split(".")[0])).first()
        return self._check(token, row)

    def _check(self, token: str, row: Any) -> User | None:
        """`token` against its account row as the database has it now (the cache only skips the scrypt)."""
        if row is None or row.disabled or self._clock() >= row.created_at + self.token_ttl_s:
            # The same scrypt as a wrong secret, so the time of a refusal does not tell which ids exist.
            _scrypt(token.split(".")[1], _DECOY_SALT)
            return None
        key, now = _sha(token), self._clock()
        with self._lock:
            hit = self._cache.get(key)
        fresh = hit is not None and hit[1] > now and hit[0] == row.token_hash
        if not fresh:
            if not hmac.compare_digest(_scrypt(token.split(".")[1], row.salt), row.token_hash):
                return None
            with self._lock:
                self._cache[key] = (row.token_hash, now + _TOKEN_CACHE_S)
        return User(row.name, row.role, tuple(row.kinds))

    def login(self, token: Any) -> tuple[User, str] | None:
        """Check `token` and open a session for its user, in one transaction: (user, session id) or None."""
        if not isinstance(token, str) or token.count(".") != 1 or len(token) > 256:
            return None
        now = self._clock()
        with write_tx(self._engine) as conn:
            query = select(_U).where(_U.c.token_id == token.split(".")[0])
            if conn.dialect.name == "postgresql":
                query = query.with_for_update()  # a concurrent --replace waits for this login, or wins
            user = self._check(token, conn.execute(query).first())
            if user is None:
                return None
            session = secrets.token_urlsafe(32)
            conn.execute(delete(_S).where(_S.c.expires_at <= now))  # housekeeping, cheap and bounded
            conn.execute(
                _S.insert(),
                {"session_hash": _sha(session), "name": user.name, "expires_at": now + SESSION_TTL_S},
            )
        return user, session

    def session_user(self, session: Any) -> User | None:
        if not isinstance(session, str) or not session or len(session) > 128:
            return None
        with read_tx(self._engine) as conn:
            row = conn.execute(
                select(_U.c.name, _U.c.role, _U.c.kinds, _U.c.disabled, _S.c.expires_at)
                .join(_S, _S.c.name == _U.c.name)
                .where(_S.c.session_hash == _sha(session))
            ).first()
        if row is None or row.disabled or row.expires_at <= self._clock():
            return None
        return User(row.name, row.role, tuple(row.kinds))

    def close_session(self, session: str) -> None:
        with write_tx(self._engine) as conn:
            conn.execute(delete(_S).where(_S.c.session_hash == _sha(session)))

"""Username skeleton: a look-alike of a taken username is taken

Revision ID: 0008
Revises: 0007

Names that look alike but are different accounts ("carol" and "cаrol" with a Cyrillic а)
share a skeleton (Unicode Technical Standard #39, computed by the service's own function,
booking_service.usernames.username_skeleton); a unique index on it refuses the second. Filled
here for existing rows. Existing accounts that already look alike are all kept, and none is
renamed: the oldest of each group holds the skeleton, the others get NULL (which the unique
index does not compare), so each still signs in with its own name and no new look-alike of
any of them can register. The upgrade lists those groups in a warning. So does it list the
(pathological) names whose skeleton is too long for the index; they get NULL as well.
"""
import logging
from collections.abc import Iterator
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

from booking_service.usernames import MAX_KEY_LENGTH, username_skeleton

# revision identifiers, used by Alembic.
revision: str = '0008'
down_revision: Union[str, Sequence[str], None] = '0007'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

BATCH = 1000
log = logging.getLogger(f"alembic.migration.{revision}")


def upgrade() -> None:
    """Upgrade schema."""
    op.add_column('users', sa.Column('username_skeleton', sa.String(length=MAX_KEY_LENGTH), nullable=True))
    connection = op.get_bind()
    overlong = []
    for batch in _batches(connection):
        rows = []
        for user_id, username in batch:
            skeleton = username_skeleton(username)
            if len(skeleton) > MAX_KEY_LENGTH:
                overlong.append(f"{username!r} (id {user_id})")
                skeleton = None
            rows.append({"id": user_id, "skeleton": skeleton})
        connection.execute(sa.text("UPDATE users SET username_skeleton = :skeleton WHERE id = :id"), rows)
    groups = connection.execute(
        sa.text(
            "SELECT array_agg(id ORDER BY id) AS ids, array_agg(username ORDER BY id) AS names "
            "FROM users WHERE username_skeleton IS NOT NULL "
            "GROUP BY username_skeleton HAVING count(*) > 1 ORDER BY min(id)"
        )
    ).all()
    # Keep the oldest account of each group on its skeleton; the younger ones step aside.
    connection.execute(
        sa.text(
            "UPDATE users AS younger SET username_skeleton = NULL FROM users AS older "
            "WHERE older.username_skeleton = younger.username_skeleton AND older.id < younger.id"
        )
    )
    op.create_index('uq_users_username_skeleton', 'users', ['username_skeleton'], unique=True)
    if groups:
        listed = "\n".join(
            "  " + ", ".join(f"{name!r} (id {user_id})" for user_id, name in zip(group.ids, group.names))
            for group in groups
        )
        log.warning(
            "%d group(s) of existing accounts look alike (one username skeleton); all are kept, "
            "the first of each group holds the skeleton:\n%s",
            len(groups),
            listed,
        )
    if overlong:
        log.warning(
            "%d username(s) have a skeleton too long for the unique index and none stored: %s",
            len(overlong),
            ", ".join(overlong),
        )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index('uq_users_username_skeleton', table_name='users')
    op.drop_column('users', 'username_skeleton')


def _batches(connection: sa.Connection) -> Iterator[list[tuple[int, str]]]:
    """(id, username) of every user, a batch at a time in id order."""
    after = 0
    while True:
        rows = connection.execute(
            sa.text("SELECT id, username FROM users WHERE id > :after ORDER BY id LIMIT :limit"),
            {"after": after, "limit": BATCH},
        ).all()
        if not rows:
            return
        yield [(row.id, row.username) for row in rows]
        after = rows[-1].id

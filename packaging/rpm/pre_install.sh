# dbtune-agent %pre: the system user must exist before the files are laid down, so that
# /etc/dbtune/dbtune.yaml gets group "dbtune". The user is left in place on removal.
getent group dbtune >/dev/null || groupadd --system dbtune
getent passwd dbtune >/dev/null || useradd --system --gid dbtune \
    --home-dir /var/lib/dbtune-agent --no-create-home --shell /sbin/nologin \
    --comment "DBtune agent" dbtune
exit 0

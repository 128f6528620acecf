# dbtune-agent %post ($1: 1 = first install, 2+ = upgrade).
if [ ! -d /var/lib/dbtune-agent ]; then
    install -d -o dbtune -g dbtune -m 0750 /var/lib/dbtune-agent
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
# Enabled, not started: the operator configures /etc/dbtune/dbtune.yaml first.
if [ "$1" -eq 1 ] && command -v systemctl >/dev/null 2>&1; then
    systemctl enable dbtune-agent.service >/dev/null 2>&1 || :
fi
exit 0

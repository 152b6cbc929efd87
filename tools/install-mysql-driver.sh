#!/bin/sh
# The C driver mysql.backup reads rows through when it is installed (davit/adapters/mysql/cdriver.py):
# mysqlclient builds against libmariadb, so Debian's headers and a compiler come first. Without it
# davit falls back to PyMySQL (same chunks, about 4x the client CPU per row), so a failure here
# is a warning, not a failed install; under CI=true the driver's test then fails loudly.
# Usage: tools/install-mysql-driver.sh PYTHON
set -u
py="$1"
if "$py" -c "import MySQLdb" 2>/dev/null; then
    exit 0
fi
if ! command -v mariadb_config >/dev/null 2>&1 && ! command -v mysql_config >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            libmariadb-dev pkg-config gcc python3-dev >/dev/null \
            || echo "warning: apt-get could not install mysqlclient's build dependencies"
    fi
fi
"$py" -m pip install -q 'mysqlclient>=2.2' \
    || echo "warning: mysqlclient did not install; mysql.backup will read rows through PyMySQL"
exit 0

module safefs

go 1.24

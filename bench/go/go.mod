module flowpool/bench/gopool

go 1.19

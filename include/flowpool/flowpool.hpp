// flowpool/flowpool.hpp - the umbrella header: include this one.
#pragma once

/// @file
/// The umbrella header: every public header of flowpool.
///
/// @code
///   #include <flowpool/flowpool.hpp>
/// @endcode

#include "flowpool/error.hpp"
#include "flowpool/graph.hpp"
#include "flowpool/job_context.hpp"
#include "flowpool/metrics.hpp"
#include "flowpool/options.hpp"
#include "flowpool/pool.hpp"
#include "flowpool/registry.hpp"
#include "flowpool/report.hpp"
#include "flowpool/version.hpp"

/// flowpool: a bounded worker pool and flow-graph engine on oneTBB.
///
/// Start with `flowpool::pool` (the Go worker-pool pattern: N workers, a bounded
/// queue of capacity C, one serial aggregator) configured by
/// `flowpool::pool_options`; `flowpool::report` is what a run returns. Graph specs
/// (`flowpool::validate_spec`, `flowpool::run_graph`) chain pools declaratively,
/// with sources, kernels and sinks from a `flowpool::registry`. Every error is a
/// `flowpool::error`. Names in `flowpool::detail` are not API.
namespace flowpool {}

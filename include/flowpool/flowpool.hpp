// flowpool/flowpool.hpp - the umbrella header: include this one.
#pragma once

#include "flowpool/error.hpp"
#include "flowpool/graph.hpp"
#include "flowpool/job_context.hpp"
#include "flowpool/metrics.hpp"
#include "flowpool/options.hpp"
#include "flowpool/pool.hpp"
#include "flowpool/registry.hpp"
#include "flowpool/report.hpp"
#include "flowpool/version.hpp"

//! Frames without their sensor border: a [`FrameStore`] that reads the frames of the store it wraps
//! and sets the edge lines every frame shows off the sky ([`tlr_core::sensor_border`]) to NaN, so that
//! the method treats them as no data (the stack is made of the other frames there, or is left without
//! data where none covers). [`leave_out_sensor_border`] measures the border on up to
//! [`PROBE_FRAMES`] frames spread over the sequence before anything else reads them.
//! What it does not: repair the lines, or change frames without such a border (the store is then
//! returned as it is, and the run is bit for bit what it was).

use ndarray::{Array2, Array3, ArrayView3};
use std::ops::Range;
use std::sync::Arc;

use tlr_core::sensor_border::{side_profile, SensorBorder, Side, MAX_LINES};

use super::{FrameMeta, FrameStore};
use crate::error::StageError;
use crate::events::{Event, EventSink};

/// Frames the border is measured on, at most, spread evenly over the sequence.
pub const PROBE_FRAMES: usize = 5;

/// `store` without the sensor border its frames show, and that border (empty, with `store` itself,
/// when there is none, the frames are too small to measure, or none could be read: the global pass
/// reports unreadable frames). A found border is reported to `events` as a warning. Blocking.
pub fn leave_out_sensor_border(
    store: Arc<dyn FrameStore>,
    events: &EventSink,
) -> (Arc<dyn FrameStore>, SensorBorder) {
    let (rows, cols) = store.shape();
    let n = store.len();
    if n == 0 || !SensorBorder::measurable(rows, cols) {
        return (store, SensorBorder::default());
    }
    let probes = PROBE_FRAMES.min(n);
    let regions: Vec<(Range<usize>, Range<usize>)> =
        Side::ALL.iter().map(|s| s.region(rows, cols)).collect();
    let mut profiles: [Vec<Option<[f32; MAX_LINES]>>; 4] = Default::default();
    for k in 0..probes {
        let index = if probes > 1 {
            k * (n - 1) / (probes - 1)
        } else {
            0
        };
        let Ok(bands) = store.read_regions(index, &regions) else {
            continue;
        };
        for ((side, band), profile) in Side::ALL.iter().zip(&bands).zip(profiles.iter_mut()) {
            profile.push(side_profile(side.lines(band.view())));
        }
    }
    let border = SensorBorder::from_profiles(&profiles);
    if border.is_empty() {
        return (store, border);
    }
    events(&Event::Warning {
        message: format!(
            "the frames' outermost lines read off the sky in every frame (a sensor border: top {}, \
             bottom {}, left {}, right {} lines); the stack does not use them",
            border.top, border.bottom, border.left, border.right
        ),
    });
    (
        Arc::new(BorderlessFrames {
            inner: store,
            border,
        }),
        border,
    )
}

/// The frames of `inner` with `border`'s lines set to NaN.
pub struct BorderlessFrames {
    inner: Arc<dyn FrameStore>,
    border: SensorBorder,
}

impl BorderlessFrames {
    /// Sets the border's pixels of each plane of `planes`, the frame region at `(rows, cols)`, to NaN.
    fn mask_planes(&self, planes: &mut Array3<f32>, rows: &Range<usize>, cols: &Range<usize>) {
        for plane in planes.outer_iter_mut() {
            self.border
                .mask(plane, (rows.start, cols.start), self.inner.shape());
        }
    }
}

impl FrameStore for BorderlessFrames {
    fn len(&self) -> usize {
        self.inner.len()
    }

    fn shape(&self) -> (usize, usize) {
        self.inner.shape()
    }

    fn meta(&self, index: usize) -> FrameMeta {
        self.inner.meta(index)
    }

    fn read_full(&self, index: usize) -> Result<Array2<f32>, StageError> {
        let mut frame = self.inner.read_full(index)?;
        self.border
            .mask(frame.view_mut(), (0, 0), self.inner.shape());
        Ok(frame)
    }

    fn read_regions(
        &self,
        index: usize,
        regions: &[(Range<usize>, Range<usize>)],
    ) -> Result<Vec<Array2<f32>>, StageError> {
        let mut read = self.inner.read_regions(index, regions)?;
        for (region, (r, c)) in read.iter_mut().zip(regions) {
            self.border
                .mask(region.view_mut(), (r.start, c.start), self.inner.shape());
        }
        Ok(read)
    }

    fn planes(&self) -> usize {
        self.inner.planes()
    }

    fn mosaic(&self) -> Option<tlr_core::bayer::CfaPattern> {
        self.inner.mosaic()
    }

    fn read_full_planes(&self, index: usize) -> Result<Array3<f32>, StageError> {
        let mut planes = self.inner.read_full_planes(index)?;
        let (rows, cols) = self.inner.shape();
        self.mask_planes(&mut planes, &(0..rows), &(0..cols));
        Ok(planes)
    }

    fn saturation_levels(&self, index: usize, planes: ArrayView3<f32>) -> Vec<Option<f32>> {
        self.inner.saturation_levels(index, planes)
    }

    fn read_plane_regions(
        &self,
        index: usize,
        regions: &[(Range<usize>, Range<usize>)],
    ) -> Result<Vec<Array3<f32>>, StageError> {
        let mut read = self.inner.read_plane_regions(index, regions)?;
        for (planes, (r, c)) in read.iter_mut().zip(regions) {
            self.mask_planes(planes, r, c);
        }
        Ok(read)
    }
}
